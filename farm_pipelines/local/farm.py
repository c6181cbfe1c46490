"""The embedded local farm: runs the three pipeline specs on this machine, the way Pachyderm would.

Datums are enumerated with Pachyderm's glob/join semantics and identified by a
hash of their input contents and the spec, so unchanged datums are skipped
(``store``), as Pachyderm skips them. Each stage's datums go to its workers one
at a time as they ask (``scheduler``, ``workers``), and the stage's output repo is
published once it is over. ``LocalFarm`` is the ``Backend``: it commits the job,
runs the stages in order and reports progress (``progress``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from farm_pipelines import gpu, job_folder, merged_frames
from farm_pipelines.atomic_files import copy_file
from farm_pipelines.backend import Progress
from farm_pipelines.datums import datum_id, enumerate_datums
from farm_pipelines.errors import BadInput, FarmFailure
from farm_pipelines.host import Host
from farm_pipelines.job import Job
from farm_pipelines.job_parts import FramePlan
from farm_pipelines.local import cache, commit_sets, memory, work_dirs
from farm_pipelines.local.frame_merges import FrameMerges
from farm_pipelines.local.progress import ProgressTracker
from farm_pipelines.local.scheduler import Scheduler, Task, describe_datum
from farm_pipelines.local.store import DatumStore
from farm_pipelines.local.workers import MAX_WORKERS, WorkerPool, usable_cpus
from farm_pipelines.pipelines import load_spec


def default_state_dir() -> Path:
    if os.environ.get("FARM_STATE_DIR"):
        return Path(os.environ["FARM_STATE_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "pachyderm-farm"


class LocalFarm:
    """A ``Backend`` that runs every datum on this machine."""

    def __init__(self, state_dir: Path | None = None, workers: int | None = None, host: Host | None = None,
                 log: Callable[[str], None] | None = None, faithful: bool = False,
                 specs: dict[str, dict] | None = None, warn: Callable[[str], None] | None = None,
                 gpu_backend: str | None = None, gpus: list[gpu.Device] | None = None) -> None:
        """``faithful`` runs every stage by a pachd worker's rules (``faithful``), without the fast paths;
        ``specs`` replaces packaged pipeline specs on the faithful farm, as an edited spec on a cluster;
        their order is the DAG's (a mixed cluster's ``renderer-gpu`` after ``renderer``).
        ``gpu_backend`` is ``gpu.parse_backend``'s (default ``FARM_GPU_BACKEND``, else auto); ``gpus``
        are the GPUs to give workers, by default those ``probe_gpus`` finds."""
        # Absolute once, so /pfs links need no per-datum resolve() (each costs a syscall per path part).
        self.root = (Path(state_dir) if state_dir else default_state_dir()).absolute()
        self.repos = self.root / "repos"
        if workers is not None and not (isinstance(workers, int) and 0 < workers <= MAX_WORKERS):
            raise BadInput(f"{workers} workers: a local farm runs 1 to {MAX_WORKERS} (each is a Blender holding "
                           "the whole scene); leave it unset for one per core")
        self._asked_workers = workers
        memory.limit_from(os.environ.get(memory.LIMIT_ENV))  # a bad FARM_MEMORY_LIMIT: bad input, before any start
        self.gpu_backend = gpu.parse_backend(gpu_backend) if gpu_backend else gpu.backend_setting()
        self._plans: list[gpu.WorkerPlan] | None = None
        self._gpus = gpus
        self.probe_failed = False  # then every renderer renders on its CPUs, as the warning says
        self.host = host or Host()
        self.log = log or (lambda message: None)
        self.warn = warn or (lambda message: self.log(f"warning: {message}"))
        self.store = DatumStore(self.root, self.log)
        self.faithful = faithful
        self.specs = specs or {}
        self._early: dict[str, tuple[ProgressTracker, dict[str, WorkerPool]]] = {}
        self.parts: dict[str, list[str]] = {}  # job -> the job folders its last run used (its parts)

    @property
    def plans(self) -> list[gpu.WorkerPlan]:
        """The renderer workers: one per GPU Cycles finds here (``probe_gpus``), CPU workers on the rest."""
        if self._plans is None:
            gpus = self.probe_gpus() if self._gpus is None else self._gpus
            self._plans = gpu.plan_workers(usable_cpus(), gpus, self._asked_workers)
            if gpus:
                cpu_workers = sum(plan.gpu is None for plan in self._plans)
                self.log(f"{len(gpus)} GPU worker(s) ({', '.join(f'{d.backend} {d.name}' for d in gpus)}) "
                         f"and {cpu_workers} CPU worker(s)")
        return self._plans

    @property
    def workers(self) -> int:
        return len(self.plans)

    def speeds(self, gpu_scene: bool) -> list[float]:
        """Each renderer worker's speed in ``tile_size``'s model: a GPU worker is ``gpu.GPU_SPEED`` CPU
        workers for a scene that asks for a GPU, and one CPU worker otherwise (it renders on its CPUs)."""
        return [gpu.GPU_SPEED if plan.gpu and gpu_scene else 1.0 for plan in self.plans]

    def probe_gpus(self) -> list[gpu.Device]:
        """The GPUs of the backend ``gpu_backend`` picks, as a Blender process of this host lists them.

        Asked only where the machine shows a GPU device file (``gpu.may_have_gpu``), since the
        probe costs a Blender start; a probe that fails is a warning, and the farm renders on CPUs.
        """
        if self.gpu_backend == "CPU" or not gpu.may_have_gpu():
            return []
        return self.list_gpus()

    def list_gpus(self) -> list[gpu.Device]:
        """Ask Cycles, in a Blender process, for the GPUs of the backend ``gpu_backend`` picks."""
        self.root.mkdir(parents=True, exist_ok=True)
        result = self.root / "gpu-probe.json"
        result.unlink(missing_ok=True)
        try:
            code, stderr = self.host.run_to_result("farm_pipelines.blender.devices", [str(result)], result,
                                                   "listing this machine's GPUs")
        except FarmFailure as stalled:  # a driver that hangs Cycles' enumeration
            code, stderr = -1, str(stalled)
        if code != 0 or not result.exists():
            lines = stderr.strip().splitlines()
            self.warn(f"listing this machine's GPUs failed ({lines[-1] if lines else f'exit code {code}'}); "
                      "rendering on the CPUs only")
            self.probe_failed = True
            return []
        found = {backend: [gpu.Device.from_json(d) for d in devices]
                 for backend, devices in json.loads(result.read_text(encoding="utf-8")).items()}
        return list(gpu.choose(self.gpu_backend, found).devices)

    # -- Backend ---------------------------------------------------------------------------------

    @contextmanager
    def starting(self, job_name: str) -> Iterator[None]:
        """Start the job's splitter and renderers while the caller prepares it; ``run`` takes them over.

        Starting Blender costs about a second of CPU per process. Started here, it overlaps
        preparing the scene, which keeps one CPU busy, instead of following it (renderers are
        niced, so preparing and splitting come first). Workers ``run`` did not take are stopped.
        A real worker starts user code only once a datum set arrives, so the faithful farm starts none here.
        """
        if self.faithful:
            yield
            return
        self._early[job_name] = self._start_workers(job_name)
        try:
            yield
        finally:
            _, pools = self._early.pop(job_name, (None, {}))
            for pool in pools.values():
                pool.stop()

    def run(self, job: Job, job_files: Path, on_progress: Callable[[Progress], None],
            cancel: threading.Event, on_frame: Callable[[int, Path], None] | None = None,
            plan: FramePlan | None = None) -> None:
        """Run the job's DAG; the caller holds ``job_lock`` for the job (``submission.render`` does).

        Each frame is merged as soon as its tiles are done (``frame_merges``) and handed to
        ``on_frame(frame, merged file)`` while the renderers go on. The faithful farm, like
        Pachyderm, delivers frames per commit, so there a job with a ``plan`` and ``on_frame``
        is run in parts (``job_parts``), each as its own commit set.
        """
        limit = cache.cache_limit(self.root)  # a bad FARM_CACHE_LIMIT is bad input before anything runs
        removed, freed = work_dirs.remove_stale(self.root)
        if removed:
            self.log(f"removed {removed} killed run(s)' work folder(s), {freed.describe()}")
        try:
            self._run(job, Path(job_files), on_progress, cancel, on_frame, plan)
        finally:
            with contextlib.suppress(OSError):  # the cap must not hide the run's own result
                cleaned = cache.enforce_limit(self.root, job.name, limit)
                for line in cleaned.lines() if cleaned.anything else []:
                    self.log(f"the farm's cache was over its limit ({cache.LIMIT_ENV}): {line}")

    def _run(self, job: Job, job_files: Path, on_progress: Callable[[Progress], None], cancel: threading.Event,
             on_frame: Callable[[int, Path], None] | None, plan: FramePlan | None) -> None:
        self.parts[job.name] = [job.name]
        if self.faithful:
            commit_sets.run_in_parts(self, job, job_files, on_progress, cancel, on_frame, plan)
            return
        tracker, warm = self._early.pop(job.name, None) or self._start_workers(job.name)
        tracker.on_progress = on_progress
        merges: FrameMerges | None = None
        try:
            self.put_job(job, job_files)
            failed_split = self.run_pipeline("splitter", job.name, tracker, cancel, warm["splitter"])
            if failed_split:
                raise FarmFailure(f"splitting failed: {next(iter(failed_split.values()))}")
            tracker.frames_total = len(list((self.repos / "splitter" / job.name).glob("frames/*")))
            renderers = warm["renderer"]
            renderers.scheduler.one_device_per_frame = self._mixes_devices(job.name)
            # Blender starts while the first tiles render; it then waits on NextDatum for each frame.
            warm["merger"] = WorkerPool(self, "merger", job.name, tracker, datums=1)
            merges = FrameMerges(self, job.name, tracker, warm["merger"], on_frame or (lambda frame, path: None))
            renderers.scheduler.on_settled = merges.tile_settled
            # The splitter opened the scene: its peak is a lower bound of what each renderer will hold.
            failed_tiles = self.run_pipeline("renderer", job.name, tracker, cancel, renderers,
                                             before_feed=merges.expect, estimate=warm["splitter"].peak_memory)
            tracker.stage("merger", total=tracker.frames_total, done=0)
            failed_merges = merges.finish(cancel)
        finally:
            for pool in warm.values():  # idempotent: also stops a pool an exception left waiting
                pool.stop()
            if merges:
                merges.remove_view()
        tracker.done(len(self.merged_frames(job.name)))
        if failed_tiles:
            first = sorted(failed_tiles.items())[0]
            raise FarmFailure(f"{len(failed_tiles)} tile(s) failed after retries; first: "
                              f"{describe_datum(first[0])}: {first[1]}")
        if failed_merges:
            raise FarmFailure(f"merging failed: {next(iter(failed_merges.values()))}")

    def _mixes_devices(self, job_name: str) -> bool:
        """True when a GPU scene meets GPU and CPU workers: then each frame stays on one kind of device."""
        kinds = {plan.kind for plan in self.plans}
        facts = self.repos / "splitter" / job_name / "scene.json"
        asks = facts.exists() and json.loads(facts.read_text(encoding="utf-8")).get("gpu", False)
        return bool(asks) and len(kinds) > 1

    def _start_workers(self, job_name: str) -> tuple[ProgressTracker, dict[str, WorkerPool]]:
        """The splitter's and renderers' workers: each starts Blender, then waits on NextDatum, so no
        stage pays for starting Blender on the critical path. The merger's starts after the split
        (``run``): started here too, it made five Blender starts share two cores with prepare, and
        the first frame came later (one ``bench/overhead.py`` run: 1.55x plain Blender's, against
        1.40x and 1.45x without; this machine varies by about 10 %)."""
        tracker = ProgressTracker()
        return tracker, {"splitter": WorkerPool(self, "splitter", job_name, tracker, datums=1),  # one per job
                         "renderer": WorkerPool(self, "renderer", job_name, tracker)}

    def fetch_frames(self, job: Job, out_dir: Path, on_frame: Callable[[int, Path], None],
                     skip: frozenset[int] = frozenset()) -> list[str]:
        out_dir = Path(out_dir)
        errors = []
        for name in self.parts.get(job.name, [job.name]):
            for frame, source in self.merged_frames(name):
                if frame in skip:
                    continue
                destination = out_dir / source.name
                copy_file(source, destination)
                on_frame(frame, destination)
            failed = self.repos / "merger" / name / merged_frames.FAILED_DIR
            errors += [path.read_text(encoding="utf-8") for path in sorted(failed.glob("*.txt"))]
        return errors

    # -- jobs and repos --------------------------------------------------------------------------

    def job_files(self, job_name: str) -> Path:
        return self.repos / "blends" / job_name

    def put_job(self, job: Job, job_files: Path) -> None:
        """Commit the job folder to the ``blends`` repo: ``repos/blends/<job>`` becomes the same tree.

        Files are hard links to the prepared folder's (whose carried files are links into the
        file store), so no texture is copied again; identical files stay untouched, and files
        of an older version of the job are removed, as a new commit replaces the job's folder.
        """
        target = self.job_files(job.name)
        if job_files.resolve() == target.resolve():
            return
        before, after = ((folder / "job.json").read_bytes() if (folder / "job.json").exists() else None
                         for folder in (target, job_files))
        if before != after:
            # Another scene or other settings under this job's name: the frames merged for the old one
            # are not this run's, and a run that fails before merging must not deliver them.
            shutil.rmtree(self.repos / "merger" / job.name, ignore_errors=True)
        wanted = set(job_folder.files_of(job_files))
        for rel in sorted(wanted):
            source, destination = job_files / rel, target / rel
            if destination.exists() and job_folder.same_file(source, destination):
                continue
            job_folder.link_or_copy(source, destination)
        for rel in job_folder.files_of(target) if target.exists() else []:
            if rel not in wanted:
                (target / rel).unlink()
        for folder in sorted((p for p in target.rglob("*") if p.is_dir()), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()

    def merged_frames(self, job_name: str) -> list[tuple[int, Path]]:
        folder = self.repos / "merger" / job_name
        frames = []
        for path in folder.glob("*") if folder.exists() else []:
            frame = merged_frames.frame_of(path.name)
            if frame is not None and path.is_file():
                frames.append((frame, path))
        return sorted(frames)

    # -- pipelines -------------------------------------------------------------------------------

    def run_pipeline(self, name: str, scope: str, tracker: ProgressTracker | None = None,
                     cancel: threading.Event | None = None, pool: WorkerPool | None = None,
                     before_feed: Callable[[list[Task], list[Task]], None] | None = None,
                     estimate: int | None = None) -> dict[str, str]:
        """Run one pipeline over the datums of job ``scope``; rebuild its output repo for that job.

        ``pool`` holds workers started ahead of time; without one they start now.
        ``before_feed(all tasks, pending tasks)`` hears of the datums before any is handed out.
        Workers beyond the pending datums stop, and renderers beyond what memory holds
        (``WorkerPool.fit``; ``estimate`` is a lower bound of a worker's peak, in bytes).
        Returns the datums that failed after all their tries: input paths -> last error.
        """
        tracker = tracker or ProgressTracker()
        cancel = cancel or threading.Event()
        spec = load_spec(name)
        salt = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        datums = enumerate_datums(spec["input"], self.repos, scope)
        listings: dict[Path, bytes] = {}
        tasks = [Task(d, datum_id(d, self.repos, salt, self.store.file_hash, listings)) for d in datums]
        pending = [t for t in tasks if not self.store.is_done(name, t.id)]
        tracker.stage(name, total=len(tasks), done=len(tasks) - len(pending))
        if pending:
            self.log(f"{name}: {len(pending)} of {len(tasks)} datum(s) to process")
        pool = pool or (WorkerPool(self, name, scope, tracker, len(pending)) if pending else None)
        scheduler = pool.scheduler if pool else Scheduler(0)
        self.store.make_room(name)
        if pool:
            pool.fit(len(pending), estimate)
        if before_feed:
            before_feed(tasks, pending)
        scheduler.feed(pending)
        if pool:
            pool.wait(cancel)
        if cancel.is_set():
            raise FarmFailure("cancelled")
        # Checked above or committed since: a datum settles as done only once it is in the store.
        done_ids = [t.id for t in tasks if t.datum.key() not in scheduler.failed]
        self.store.publish(name, scope, done_ids)
        return scheduler.failed
