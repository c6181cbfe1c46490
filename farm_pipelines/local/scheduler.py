"""Handing a stage's datums to its workers, one at a time, with retries.

Workers ask for work as they become free, so a slow worker never holds the others
up, and a failed datum goes to the back of the queue until the spec's
``datum_tries`` run out. The scheduler is the one place that knows whether a stage
is over: every datum taken must be settled (``finish``, ``requeue``) or the others
wait for it forever, which is why a worker that gives up must hand its datum back
through ``finish`` before ``fail_all``.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from farm_pipelines.datums import Datum
from farm_pipelines.manifest import describe_piece


@dataclass
class Task:
    """One datum of a stage, with the attempts made at it so far."""

    datum: Datum
    id: str
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


class Scheduler:
    """Hands out tasks one at a time; failed tasks go to the back of the queue until tries run out."""

    def __init__(self, tries: int) -> None:
        self._queue: collections.deque[Task] = collections.deque()
        self._tries = tries
        self._open = True  # more tasks may still come: workers wait instead of stopping
        self._in_flight = 0
        self._cond = threading.Condition()
        self.cancelled = False
        self.failed: dict[str, str] = {}
        self.gave_up: str | None = None  # why the first worker that could not go on stopped
        #: Keep every frame on one kind of device (``gpu.frame_digits`` says why); set before ``feed``.
        self.one_device_per_frame = False
        self._settled: list[tuple[Task, str | None]] = []  # settled since ``on_settled`` last heard
        self._claims: dict[str, str] = {}  # frame -> the kind of worker that took its first tile
        self._live: collections.Counter[str] = collections.Counter()  # workers of each kind still running
        #: Called with each task once it is settled (done, or failed for good), outside the lock:
        #: the local farm hands a frame to the merger as its last tile settles.
        self.on_settled: Callable[[Task, str | None], None] = lambda task, error: None

    def feed(self, tasks: list[Task]) -> None:
        """Add the stage's tasks, all at once; after this an empty queue means the stage is over."""
        self.add(tasks)
        self.close()

    def add(self, tasks: list[Task]) -> None:
        """Add tasks while the stage may still get more (the merger's frames, as their tiles finish).

        Tasks that come once the stage is closed fail at once: no worker would ever take them.
        """
        with self._cond:
            if not self._open:
                for task in tasks:
                    self._fail(task, "it came after its stage had ended (a fault of the farm); run again")
            else:
                self._queue.extend(tasks)
                self._settle_if_given_up()
            self._cond.notify_all()
        self._report()

    def close(self) -> None:
        """No more tasks will come: once the queue is empty and nothing is in flight, the stage is over."""
        with self._cond:
            self._open = False
            self._cond.notify_all()

    def _settle_if_given_up(self) -> None:
        """A worker failed before these tasks came: they share its fate."""
        if self.gave_up is not None:
            while self._queue:
                self._fail(self._queue.popleft(), self.gave_up)

    def _fail(self, task: Task, error: str) -> None:
        self.failed[task.datum.key()] = error
        self._settled.append((task, error))

    def _report(self) -> None:
        """Tell ``on_settled`` of what settled, outside the lock (it may feed another stage)."""
        with self._cond:
            settled, self._settled = self._settled, []
        for task, error in settled:
            self.on_settled(task, error)

    def take(self, kind: str = "") -> Task | None:
        """The next task, waiting while others may still fail and come back; None when the stage is over.

        With ``one_device_per_frame`` a worker of ``kind`` takes only tiles of frames no
        other kind has started, unless no worker of that kind is left to finish them.
        """
        with self._cond:
            while True:
                if self.cancelled:
                    return None
                index = self._eligible(kind)
                if index is not None:
                    task = self._queue[index]
                    del self._queue[index]
                    if self.one_device_per_frame:
                        self._claims.setdefault(frame_of(task), kind)
                    self._in_flight += 1
                    return task
                if not self._queue and (self.gave_up is not None or not (self._in_flight or self._open)):
                    return None  # over, or given up: what still comes fails at once (``add``)
                self._cond.wait()

    def _eligible(self, kind: str) -> int | None:
        """The queue index this worker takes next, or None to wait.

        A worker first finishes frames of its own kind (or orphaned ones). Only then does it
        open a frame: a GPU worker the next one, a CPU worker the last one, and a CPU worker never
        the only frame left unopened while a GPU worker lives, so a still or a short shot goes
        to the GPU rather than to whichever worker woke first.
        """
        if not self._queue:
            return None
        if not self.one_device_per_frame:
            return 0
        unopened: dict[str, int] = {}
        for index, task in enumerate(self._queue):
            frame = frame_of(task)
            owner = self._claims.get(frame)
            if owner is None:
                unopened.setdefault(frame, index)
            elif owner == kind or not self._live[owner]:
                return index
        if not unopened:
            return None
        if kind == "gpu" or not self._live["gpu"]:
            return next(iter(unopened.values()))
        return list(unopened.values())[-1] if len(unopened) > 1 else None

    def join(self, kind: str) -> None:
        """A worker of ``kind`` starts taking tasks."""
        with self._cond:
            self._live[kind] += 1

    def leave(self, kind: str) -> None:
        """A worker of ``kind`` stopped for good: frames only it could take are open to every worker."""
        with self._cond:
            self._live[kind] -= 1
            self._cond.notify_all()

    def finish(self, task: Task, error: str | None) -> bool:
        """Record an attempt; True when the task is settled (succeeded or out of tries)."""
        with self._cond:
            self._in_flight -= 1
            settled = True
            if error is not None:
                task.attempts += 1
                task.errors.append(error)
                if task.attempts < self._tries and self.gave_up is None:
                    self._queue.append(task)
                    settled = False
                else:
                    self._fail(task, error)
            else:
                self._settled.append((task, None))
            self._cond.notify_all()
        self._report()
        return settled

    def requeue(self, task: Task) -> None:
        """Give back a task that was taken but never started; it is not an attempt."""
        with self._cond:
            self._in_flight -= 1
            self._queue.appendleft(task)
            self._cond.notify_all()

    def fail_all(self, error: str) -> None:
        """Fail every task still queued with ``error`` (or why a worker gave up, which says more);
        tasks in flight settle as their workers report."""
        with self._cond:
            while self._queue:
                self._fail(self._queue.popleft(), self.gave_up or error)
            self._cond.notify_all()
        self._report()

    def give_up(self, task: Task | None, error: str) -> None:
        """A worker cannot go on: fail the task it holds, without retrying it, and the whole queue.

        One step under the lock, so no other worker takes the task back in between:
        what stopped this worker (a full disk, a fault of the farm) would stop it too.
        """
        with self._cond:
            self.gave_up = self.gave_up or error
            if task is not None:
                self._in_flight -= 1
                task.attempts += 1
                task.errors.append(error)
                self._fail(task, error)
            while self._queue:
                self._fail(self._queue.popleft(), error)
            self._cond.notify_all()
        self._report()

    def drained(self) -> bool:
        with self._cond:
            return self.cancelled or (not self._queue and not self._in_flight
                                      and (not self._open or self.gave_up is not None))

    def cancel(self) -> None:
        with self._cond:
            self.cancelled = True
            self._cond.notify_all()


def frame_of(task: Task) -> str:
    """``.../tiles/000003_0007.json`` -> ``000003``: the frame a tile datum belongs to."""
    return task.datum.key().rsplit("/", 1)[-1].split("_", 1)[0]


def describe_datum(datum_key: str) -> str:
    """``blends:/job|splitter:/job/tiles/000003_0007.json`` -> ``frame 3 tile 7``."""
    name = datum_key.rsplit("/", 1)[-1].removesuffix(".json")
    return describe_piece(name) or name
