"""A stage's workers: how many, on which CPUs, and how many the stage keeps once it knows its work.

Each worker (``worker_slot``) is one long-lived process fed datums through the Worker
API. The renderer's workers start before the tile count is known, while the scene is
prepared, so ``WorkerPool.fit`` stops those beyond the datum count; and since each
holds the whole scene, those beyond what memory holds stop once a worker's peak is
measured (``worker_memory``, ``memory``).
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from farm_pipelines import gpu
from farm_pipelines.errors import FarmFailure
from farm_pipelines.local import memory, work_dirs
from farm_pipelines.local.progress import ProgressTracker
from farm_pipelines.local.scheduler import Scheduler
from farm_pipelines.local.worker_memory import MemoryGuard, measurable, process_memory
from farm_pipelines.local.worker_slot import Slot
from farm_pipelines.pipelines import load_spec

if TYPE_CHECKING:
    from farm_pipelines.local.farm import LocalFarm

#: The most workers a local farm starts: each is a Blender process holding the whole scene.
MAX_WORKERS = 256


def default_workers() -> int:
    return max(1, len(usable_cpus()))


def usable_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cpu_sets(count: int) -> list[set[int]]:
    """Split this process's CPUs between ``count`` workers: disjoint while there are enough.

    A worker pinned to its own CPUs keeps its caches, and its Blender's thread pool
    matches them: a Cycles render limited to fewer threads than the CPUs it may
    run on leaves idle pool threads spinning on ``sched_yield``, which on a busy
    machine takes CPU from the renderers next door.
    """
    cpus = usable_cpus()
    if count >= len(cpus):
        return [{cpus[i % len(cpus)]} for i in range(count)]
    return [set(cpus[i * len(cpus) // count:(i + 1) * len(cpus) // count]) for i in range(count)]


class WorkerPool:
    """The workers of one pipeline stage, sharing one scheduler; they may start before it is fed.

    Workers that start before the stage's datums are known may be more than it can use
    or than memory holds: ``fit`` stops those beyond the datum count, and once a renderer's
    first datum is measured (``worker_memory``), those beyond what memory holds stop too.
    """

    def __init__(self, farm: LocalFarm, pipeline: str, scope: str, tracker: ProgressTracker,
                 datums: int | None = None) -> None:
        spec = load_spec(pipeline)
        if not spec["transform"].get("datum_batching"):  # each transform calls run_batched
            raise FarmFailure(f"pipeline {pipeline}: the local farm runs only transforms with datum_batching")
        self.scheduler = Scheduler(int(spec.get("datum_tries", 3)))
        self.farm, self.pipeline = farm, pipeline
        # Every stage measures its workers (the splitter's peak bounds the renderer's need from below);
        # only the renderer, which has many workers, is bounded by memory.
        self.guard = MemoryGuard(memory.limit_from(os.environ.get(memory.LIMIT_ENV))
                                 if pipeline == "renderer" else None)
        self._lock = threading.Lock()
        self.run = work_dirs.new_run_dir(farm.root, pipeline)  # locked while in use: a killed run's is removed later
        self.run_dir = self.run.path
        count = min(farm.workers, datums) if datums else farm.workers
        # Renderers follow the farm's plan (GPU workers first); the other stages share the CPUs.
        plans = farm.plans[:count] if pipeline == "renderer" else \
            [gpu.WorkerPlan(frozenset(cpus)) for cpus in cpu_sets(count)]
        self.slots = [Slot(self, spec, scope, self.run_dir / str(i), tracker, plan) for i, plan in enumerate(plans)]
        self.threads = [threading.Thread(target=slot.run, daemon=True) for slot in self.slots]
        for thread in self.threads:
            thread.start()

    @property
    def peak_memory(self) -> int | None:
        """The most memory one of this stage's worker processes has held so far (bytes), if measured."""
        return self.guard.need

    def fit(self, datums: int, estimate: int | None = None) -> None:
        """The stage has ``datums`` datums to run (call it before ``Scheduler.feed``): stop the workers
        beyond them, and, for the renderer, gate its first datum to one worker when the workers could
        overflow memory (``FARM_MEMORY_LIMIT`` set, or ``estimate`` bytes per worker, a lower bound such
        as the splitter's ``peak_memory``, times the workers above what is available)."""
        with self._lock:
            self._shrink(datums, f"the stage has {datums} datum(s) for {len(self._active())} worker(s)")
        if self.pipeline != "renderer":
            return
        if not measurable():
            if self.guard.limit is not None:
                self.farm.warn(f"{memory.LIMIT_ENV} is not applied: this system does not show how much memory "
                               "a worker uses")
            return
        active = self._active()
        self.guard.expect(estimate, len(active), self._held(active))

    def bound_by_memory(self) -> None:
        """A new peak was measured: stop the renderer workers beyond what memory holds, saying so once."""
        with self._lock:
            active = self._active()
            need, budget = self.guard.need, self.guard.budget(self._held(active))
            if need is None or budget is None:
                return
            fitting = memory.workers_that_fit(need, budget, len(active))
            if fitting < len(active):
                line = memory.bound_line(need, fitting, len(active), budget, self.guard.limit is not None)
                self.farm.log(line)
                self._shrink(fitting, line)

    def _active(self) -> list[Slot]:
        return [slot for slot in self.slots if not slot.retiring]

    @staticmethod
    def _held(slots: list[Slot]) -> int:
        """The memory these workers' processes hold now: what stopping them would give back."""
        return sum(process_memory(slot.process.pid, "VmRSS") or 0
                   for slot in slots if slot.process and slot.process.poll() is None)

    def _shrink(self, count: int, reason: str) -> None:
        """Keep ``count`` workers, those with the scene loaded first; the others stop once they hold no datum."""
        active = self._active()
        keep = sorted(active, key=lambda slot: (not slot.loaded, self.slots.index(slot)))[:count]
        for slot in active:
            if slot not in keep:
                slot.retire(reason)

    def wait(self, cancel: threading.Event) -> None:
        while any(t.is_alive() for t in self.threads):
            if cancel.is_set():
                self.stop()
            time.sleep(0.1)
        # Every worker has gone: a task still queued (one handed back as its worker failed) has nobody to run it.
        self.scheduler.fail_all("no worker was left to run it; the workers' logs say why")
        self.run.remove()

    def stop(self) -> None:
        """Stop every worker now: a cancel, or a stage that will never be fed."""
        self.scheduler.cancel()
        for slot in self.slots:
            slot.stop()
        for thread in self.threads:
            thread.join()
        self.run.remove()
