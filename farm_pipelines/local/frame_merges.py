"""Merging each frame as soon as its own tiles are done, while the renderers go on.

The renderers take tiles frame-major (the splitter's tile names sort by frame), so
frames finish one after another. When a frame's last tile settles (rendered, or
failed for good) its pieces are linked into a live view of the renderer's output,
``repos/.live-<id>/renderer/<job>/<frame>/``, and the frame becomes a merger datum
joined as the merger's spec joins it on Pachyderm: the job's blend, the frame's
manifest and the job's tiles (of which the merger reads only the frame's own).

A merger datum's id covers what it reads: the blend folder, the manifest and the
frame's own pieces. (Pachyderm's covers the job's whole tile folder, so there a
changed tile re-merges every frame of its job.) A frame stored from an earlier
run under the same id, and undamaged (``DatumStore.is_done``), is delivered at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from farm_pipelines import merged_frames
from farm_pipelines.datums import Datum, DatumInput, datum_id
from farm_pipelines.errors import FarmFailure
from farm_pipelines.local.progress import ProgressTracker
from farm_pipelines.local.scheduler import Task, frame_of
from farm_pipelines.pipelines import load_spec

if TYPE_CHECKING:
    from farm_pipelines.local.farm import LocalFarm
    from farm_pipelines.local.workers import WorkerPool


class FrameMerges:
    """One job's frames on their way from the renderer's tiles to the merger and out."""

    def __init__(self, farm: LocalFarm, job_name: str, tracker: ProgressTracker, pool: WorkerPool,
                 on_frame: Callable[[int, Path], None]) -> None:
        """``on_frame(frame, merged file)`` is called once per merged frame, from a worker's thread."""
        self.farm, self.job, self.tracker, self.pool, self.on_frame = farm, job_name, tracker, pool, on_frame
        self.live = farm.repos / f".live-{uuid.uuid4().hex[:8]}"
        spec = json.dumps(load_spec("merger"), sort_keys=True)
        self._salt = hashlib.sha256(f"frame-scoped\0{spec}".encode()).hexdigest()
        self._lock = threading.Lock()
        self._waiting: dict[str, set[str]] = {}  # frame -> keys of its tiles not settled yet
        self.ids: list[str] = []  # this run's merger datums, published as the job's merger commit
        self._settled: set[str] = set()  # frames whose merger datum settled (or that were stored)
        self._fault: Exception | None = None  # the first frame that could not be handed on, and why
        self.stored = 0  # frames found merged by an earlier run
        pool.scheduler.on_settled = self._merged
        farm.store.make_room("merger")

    def expect(self, tasks: list[Task], pending: list[Task]) -> None:
        """Every tile of the job, and those still to render; called before the renderers are fed."""
        waiting = {task.datum.key() for task in pending}
        frames: dict[str, set[str]] = {}
        for task in tasks:
            frames.setdefault(frame_of(task), set())
            if task.datum.key() in waiting:
                frames[frame_of(task)].add(task.datum.key())
            else:  # stored from an earlier run, checked by the store
                self._link_pieces(task)
        with self._lock:
            self._waiting = frames
        for frame in sorted(frame for frame, keys in frames.items() if not keys):
            self._ready(frame)

    def tile_settled(self, task: Task, error: str | None) -> None:
        """The renderer scheduler's ``on_settled``: a frame whose last tile settled goes to the merger.

        A tile that cannot be shown to the merger (its link fails) still settles its frame: the
        merger then names the piece missing, rather than the frame never being merged."""
        if error is None:
            try:
                self._link_pieces(task)
            except OSError as failure:
                self._fault = self._fault or failure
        frame = frame_of(task)
        with self._lock:
            keys = self._waiting.get(frame)
            if keys is None or task.datum.key() not in keys:
                return
            keys.discard(task.datum.key())
            ready = not keys
        if ready:
            self._ready(frame)

    def finish(self, cancel: threading.Event) -> dict[str, str]:
        """Once the renderers are done: merge what is left; returns the merger datums that failed.

        Raises ``FarmFailure`` when cancelled, when a merged frame could not be delivered (a full
        ``--out``), or when a frame of the job never reached the merger: a fault of the farm, never
        an exit 0 with a frame missing."""
        self.pool.scheduler.close()
        self.pool.wait(cancel)
        if cancel.is_set():
            raise FarmFailure("cancelled")
        if self.stored:
            self.farm.log(f"merger: {self.stored} frame(s) were merged by an earlier run")
        self.farm.store.publish("merger", self.job, self.ids)
        if isinstance(self._fault, FarmFailure):
            raise self._fault
        with self._lock:
            lost = sorted(set(self._waiting) - self._settled)
        if lost:
            raise FarmFailure(f"{len(lost)} frame(s) never reached the merger (first: frame {int(lost[0])}); "
                              "run the same command again")
        if self._fault:
            raise FarmFailure(f"a tile could not be handed to the merger ({self._fault}); run the same command "
                              "again")
        return self.pool.scheduler.failed

    def remove_view(self) -> None:
        shutil.rmtree(self.live, ignore_errors=True)

    def _link_pieces(self, task: Task) -> None:
        """Show a stored tile's pieces in the live view (hard links: the store and the repos share a disk)."""
        stored = self.farm.store.datum_dir("renderer", task.id)
        start = len(str(stored)) + 1
        for top, _dirs, files in os.walk(stored / self.job):
            for name in files:
                if name.startswith("."):
                    continue
                target = self.live / "renderer" / os.path.join(top, name)[start:]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.unlink(missing_ok=True)
                os.link(os.path.join(top, name), target)

    def _ready(self, frame: str) -> None:
        blends = DatumInput("blends", "blends", f"/{self.job}", self.job)
        manifest = DatumInput("splitter", "splitter", f"/{self.job}/frames/{frame}", self.job)
        tiles_repo = f"{self.live.name}/renderer"
        datum = Datum((blends, manifest, DatumInput("renderer", tiles_repo, f"/{self.job}", self.job)))
        read = Datum((blends, manifest, DatumInput("renderer", tiles_repo, f"/{self.job}/{frame}", self.job)))
        task = Task(datum, datum_id(read, self.farm.repos, self._salt, self.farm.store.file_hash))
        if self.farm.store.is_done("merger", task.id):
            self.stored += 1
            self._merged(task, None, fresh=False)
        else:
            self.pool.scheduler.add([task])

    def _merged(self, task: Task, error: str | None, fresh: bool = True) -> None:
        """A frame's merger datum settled: deliver its frame, or record why there is none."""
        frame = int(task.datum.inputs[1].path.rsplit("/", 1)[-1])
        with self._lock:
            if error is None:
                self.ids.append(task.id)
        folder = self.farm.store.datum_dir("merger", task.id) / self.job
        failure = folder / merged_frames.failure_path(frame)
        merged = [path for path in folder.glob("*") if path.is_file() and merged_frames.frame_of(path.name) == frame]
        with self._lock:
            self._settled.add(task.datum.inputs[1].path.rsplit("/", 1)[-1])
        if error is None and merged and self._fault is None:
            try:
                self.on_frame(frame, merged[0])
            except (FarmFailure, OSError) as failure:  # a full --out: said once the merger is done
                self._fault = failure
        elif error is None and not merged and not failure.exists():
            self._fault = self._fault or FarmFailure(f"frame {frame}: the merger wrote nothing")
        self.tracker.frame_settled(fresh)
