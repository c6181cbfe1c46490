"""The embedded local farm: runs the three pipeline specs on this machine, the way Pachyderm would.

State lives under one directory (``FARM_STATE_DIR``, default
``$XDG_CACHE_HOME/pachyderm-farm`` or ``~/.cache/pachyderm-farm``)::

    repos/<repo>/<job>/...          a repo's files, as the head commit would hold them
    datums/<pipeline>/<datum-id>/   the output of every datum that succeeded (the resume cache)
    work/<run>/<slot>/pfs/          a worker's /pfs: each input (files hard-linked), out/, .env
    logs/<pipeline>/<job>/          worker logs
    locks/<job>.lock                one run per job at a time

Datums are enumerated with Pachyderm's glob/join semantics, identified by a hash
of their input contents and the spec (so unchanged datums are skipped, as
Pachyderm skips them), handed out one at a time to N workers as they ask (so a
slow worker never holds others up), and retried up to the spec's
``datum_tries``. Every transform uses ``datum_batching``: one long-lived process
per worker, fed through the same Worker API (``NextDatum``) that pachd serves.
"""

from __future__ import annotations

import collections
import errno
import functools
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from farm_pipelines import liveness, pachyderm
from farm_pipelines.atomic_files import copy_file
from farm_pipelines.backend import Progress
from farm_pipelines.datums import Datum, datum_id, enumerate_datums
from farm_pipelines.errors import FarmFailure
from farm_pipelines.host import Host
from farm_pipelines.job import Job
from farm_pipelines.manifest import describe_piece
from farm_pipelines.pipelines import PIPELINES, load_spec

_FILES = ".files.json"  # inside a datum's output: sizes of what it wrote, to detect damage on resume
WORKER_NICENESS = 10


def default_state_dir() -> Path:
    if os.environ.get("FARM_STATE_DIR"):
        return Path(os.environ["FARM_STATE_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "pachyderm-farm"


def default_workers() -> int:
    return max(1, len(_usable_cpus()))


def _usable_cpus() -> list[int]:
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
    cpus = _usable_cpus()
    if count >= len(cpus):
        return [{cpus[i % len(cpus)]} for i in range(count)]
    return [set(cpus[i * len(cpus) // count:(i + 1) * len(cpus) // count]) for i in range(count)]


@dataclass
class _Task:
    datum: Datum
    id: str
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


class _Scheduler:
    """Hands out tasks one at a time; failed tasks go to the back of the queue until tries run out."""

    def __init__(self, tries: int) -> None:
        self._queue: collections.deque[_Task] = collections.deque()
        self._tries = tries
        self._open = True  # more tasks may still come: workers wait instead of stopping
        self._in_flight = 0
        self._cond = threading.Condition()
        self.cancelled = False
        self.failed: dict[str, str] = {}

    def feed(self, tasks: list[_Task]) -> None:
        """Add the stage's tasks, all at once; after this an empty queue means the stage is over."""
        with self._cond:
            self._queue.extend(tasks)
            self._open = False
            self._cond.notify_all()

    def take(self) -> _Task | None:
        with self._cond:
            while not self._queue and (self._in_flight or self._open) and not self.cancelled:
                self._cond.wait()
            if self.cancelled or not self._queue:
                return None
            self._in_flight += 1
            return self._queue.popleft()

    def finish(self, task: _Task, error: str | None) -> bool:
        """Record an attempt; True when the task is settled (succeeded or out of tries)."""
        with self._cond:
            self._in_flight -= 1
            settled = True
            if error is not None:
                task.attempts += 1
                task.errors.append(error)
                if task.attempts < self._tries:
                    self._queue.append(task)
                    settled = False
                else:
                    self.failed[task.datum.key()] = error
            self._cond.notify_all()
            return settled

    def requeue(self, task: _Task) -> None:
        """Give back a task that was taken but never started; it is not an attempt."""
        with self._cond:
            self._in_flight -= 1
            self._queue.appendleft(task)
            self._cond.notify_all()

    def fail_all(self, error: str) -> None:
        with self._cond:
            while self._queue:
                self.failed[self._queue.popleft().datum.key()] = error
            self._cond.notify_all()

    def drained(self) -> bool:
        with self._cond:
            return self.cancelled or (not self._queue and not self._in_flight and not self._open)

    def cancel(self) -> None:
        with self._cond:
            self.cancelled = True
            self._cond.notify_all()


class LocalFarm:
    """A ``Backend`` that runs every datum on this machine."""

    def __init__(self, state_dir: Path | None = None, workers: int | None = None, host: Host | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        # Absolute once, so /pfs links need no per-datum resolve() (each costs a syscall per path part).
        self.root = (Path(state_dir) if state_dir else default_state_dir()).absolute()
        self.repos = self.root / "repos"
        self.workers = max(1, workers or default_workers())
        self.host = host or Host()
        self.log = log or (lambda message: None)
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._files: dict[tuple[str, str], list[str]] = {}  # (pipeline, datum id) -> what it wrote
        self._early: dict[str, tuple[_ProgressTracker, dict[str, _WorkerPool]]] = {}

    # -- Backend ---------------------------------------------------------------------------------

    @contextmanager
    def starting(self, job_name: str) -> Iterator[None]:
        """Start the job's splitter and renderers while the caller prepares it; ``run`` takes them over.

        Starting Blender costs about a second of CPU per process. Started here, it overlaps
        preparing the scene, which keeps one CPU busy, instead of following it (renderers are
        niced, so preparing and splitting come first). Workers ``run`` did not take are stopped.
        """
        self._early[job_name] = self._start_workers(job_name)
        try:
            yield
        finally:
            _, pools = self._early.pop(job_name, (None, {}))
            for pool in pools.values():
                pool.stop()

    def run(self, job: Job, job_files: Path, on_progress: Callable[[Progress], None],
            cancel: threading.Event) -> None:
        """Run the job's DAG; the caller holds ``job_lock`` for the job (``submission.render`` does)."""
        tracker, warm = self._early.pop(job.name, None) or self._start_workers(job.name)
        tracker.on_progress = on_progress
        try:
            self._put_job(job, Path(job_files))
            failed: dict[str, dict[str, str]] = {}
            for name in PIPELINES:
                failed[name] = self.run_pipeline(name, job.name, tracker, cancel, warm.get(name))
                if name == "splitter":
                    if failed[name]:
                        raise FarmFailure(f"splitting failed: {next(iter(failed[name].values()))}")
                    tracker.frames_total = len(list((self.repos / "splitter" / job.name).glob("frames/*")))
                    # Blender starts while the tiles render; it then waits on NextDatum for its datum.
                    warm["merger"] = _WorkerPool(self, "merger", job.name, tracker, datums=1)  # one per job
        finally:
            for pool in warm.values():  # idempotent: also stops a pool an exception left waiting
                pool.stop()
        tracker.done(len(self._merged_frames(job.name)))
        failed_tiles = failed["renderer"]
        if failed_tiles:
            first = sorted(failed_tiles.items())[0]
            raise FarmFailure(f"{len(failed_tiles)} tile(s) failed after retries; first: "
                              f"{_tile_of(first[0])}: {first[1]}")
        if failed["merger"]:
            raise FarmFailure(f"merging failed: {next(iter(failed['merger'].values()))}")

    def _start_workers(self, job_name: str) -> tuple[_ProgressTracker, dict[str, _WorkerPool]]:
        """The splitter's and renderers' workers: each starts Blender, then waits on NextDatum, so no
        stage pays for starting Blender on the critical path."""
        tracker = _ProgressTracker()
        return tracker, {"splitter": _WorkerPool(self, "splitter", job_name, tracker, datums=1),  # one per job
                         "renderer": _WorkerPool(self, "renderer", job_name, tracker)}

    def fetch_frames(self, job: Job, out_dir: Path, on_frame: Callable[[int, Path], None]) -> list[str]:
        out_dir = Path(out_dir)
        for frame, source in self._merged_frames(job.name):
            destination = out_dir / source.name
            copy_file(source, destination)
            on_frame(frame, destination)
        failed = self.repos / "merger" / job.name / "failed.json"
        return json.loads(failed.read_text(encoding="utf-8")) if failed.exists() else []

    # -- jobs and repos --------------------------------------------------------------------------

    def job_files(self, job_name: str) -> Path:
        return self.repos / "blends" / job_name

    def _put_job(self, job: Job, job_files: Path) -> None:
        """Commit the job's files to the ``blends`` repo, leaving identical files untouched."""
        target = self.job_files(job.name)
        if job_files.resolve() == target.resolve():
            return
        for source in job_files.iterdir():
            destination = target / source.name
            if destination.exists() and _same_file(source, destination):
                continue
            copy_file(source, destination)

    def _merged_frames(self, job_name: str) -> list[tuple[int, Path]]:
        folder = self.repos / "merger" / job_name
        frames = []
        for path in folder.glob("*") if folder.exists() else []:
            stem = path.name.split(".")[0]
            if path.is_file() and stem.lstrip("-").isdigit() and not path.name.startswith("."):
                frames.append((int(stem), path))
        return sorted(frames)

    # -- pipelines -------------------------------------------------------------------------------

    def run_pipeline(self, name: str, scope: str, tracker: _ProgressTracker | None = None,
                     cancel: threading.Event | None = None, pool: _WorkerPool | None = None) -> dict[str, str]:
        """Run one pipeline over the datums of job ``scope``; rebuild its output repo for that job.

        ``pool`` holds workers started ahead of time; without one they start now. Returns the
        datums that failed after all their tries: input paths -> last error.
        """
        tracker = tracker or _ProgressTracker()
        cancel = cancel or threading.Event()
        spec = load_spec(name)
        salt = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        datums = enumerate_datums(spec["input"], self.repos, scope)
        listings: dict[Path, bytes] = {}
        tasks = [_Task(d, datum_id(d, self.repos, salt, self._file_hash, listings)) for d in datums]
        pending = [t for t in tasks if not self._is_done(name, t.id)]
        tracker.stage(name, total=len(tasks), done=len(tasks) - len(pending))
        if pending:
            self.log(f"{name}: {len(pending)} of {len(tasks)} datum(s) to process")
        pool = pool or (_WorkerPool(self, name, scope, tracker, len(pending)) if pending else None)
        scheduler = pool.scheduler if pool else _Scheduler(0)
        (self.root / "datums" / name).mkdir(parents=True, exist_ok=True)  # before a commit lands there
        scheduler.feed(pending)
        if pool:
            pool.wait(cancel)
        if cancel.is_set():
            raise FarmFailure("cancelled")
        # Checked above or committed since: a datum settles as done only once it is in the store.
        done_ids = [t.id for t in tasks if t.datum.key() not in scheduler.failed]
        self._publish(name, scope, done_ids)
        return scheduler.failed

    # -- datum store -----------------------------------------------------------------------------

    def _datum_dir(self, pipeline: str, ident: str) -> Path:
        return self.root / "datums" / pipeline / ident  # run_pipeline makes the pipeline's folder

    def _is_done(self, pipeline: str, ident: str) -> bool:
        """Done means committed and undamaged: every file it wrote still has its recorded size."""
        folder = self._datum_dir(pipeline, ident)
        record = folder / _FILES
        if not record.exists():
            return False
        sizes = json.loads(record.read_text(encoding="utf-8"))
        for rel, size in sizes.items():
            path = folder / rel
            if not path.is_file() or path.stat().st_size != size:
                self.log(f"{pipeline}: output {rel} is damaged; the datum will run again")
                shutil.rmtree(folder, ignore_errors=True)
                return False
        self._files[(pipeline, ident)] = list(sizes)
        return True

    def commit_datum(self, pipeline: str, ident: str, out: Path | str) -> None:
        """Move a finished datum's /pfs/out into the store in one rename.

        Runs once per tile on the hand-off's critical path, so it spends few system
        calls: the size record is written in place (``out`` is private until the
        rename), and ``run_pipeline`` has made the store's folder.
        """
        sizes = {rel: os.stat(path).st_size for rel, path in _visible_files(out)}
        with open(os.path.join(out, _FILES), "w", encoding="utf-8") as record:
            record.write(json.dumps(dict(sorted(sizes.items()))))
        self._files[(pipeline, ident)] = list(sizes)
        destination = self._datum_dir(pipeline, ident)
        try:
            os.replace(out, destination)
        except OSError as error:  # an old, damaged copy of this datum is in the way
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            shutil.rmtree(destination)
            os.replace(out, destination)

    def _publish(self, pipeline: str, scope: str, ids: list[str]) -> None:
        """Make ``repos/<pipeline>/<scope>`` the union of the datums' outputs, swapped in at once."""
        base = self.repos / pipeline
        staging = base / f".{scope}.{uuid.uuid4().hex[:8]}"
        made: set[Path] = set()
        for ident in ids:
            # Each datum's file list is known from its commit or its resume check: no tree walks.
            folder = self._datum_dir(pipeline, ident)
            for rel in self._written(pipeline, ident):
                if not rel.startswith(f"{scope}/"):
                    continue
                path, target = folder / rel, staging / rel.removeprefix(f"{scope}/")
                if target.parent not in made:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    made.add(target.parent)
                os.link(path, target)
        staging.mkdir(parents=True, exist_ok=True)
        final = base / scope
        old = base / f".{scope}.old.{uuid.uuid4().hex[:8]}"
        if final.exists():
            os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)

    def _written(self, pipeline: str, ident: str) -> list[str]:
        if (pipeline, ident) not in self._files:
            record = self._datum_dir(pipeline, ident) / _FILES
            self._files[(pipeline, ident)] = list(json.loads(record.read_text(encoding="utf-8")))
        return self._files[(pipeline, ident)]

    def _file_hash(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._hashes:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            self._hashes[key] = digest.hexdigest()
        return self._hashes[key]


class _WorkerPool:
    """The workers of one pipeline stage, sharing one scheduler; they may start before it is fed."""

    def __init__(self, farm: LocalFarm, pipeline: str, scope: str, tracker: _ProgressTracker,
                 datums: int | None = None) -> None:
        spec = load_spec(pipeline)
        if not spec["transform"].get("datum_batching"):  # each transform calls run_batched
            raise FarmFailure(f"pipeline {pipeline}: the local farm runs only transforms with datum_batching")
        self.scheduler = _Scheduler(int(spec.get("datum_tries", 3)))
        self.run_dir = farm.root / "work" / f"{pipeline}-{uuid.uuid4().hex[:8]}"
        count = min(farm.workers, datums) if datums else farm.workers
        self.slots = [_Slot(farm, pipeline, spec, scope, self.run_dir / str(i), self.scheduler, tracker, cpus)
                      for i, cpus in enumerate(cpu_sets(count))]
        self.threads = [threading.Thread(target=slot.run, daemon=True) for slot in self.slots]
        for thread in self.threads:
            thread.start()

    def wait(self, cancel: threading.Event) -> None:
        while any(t.is_alive() for t in self.threads):
            if cancel.is_set():
                self.stop()
            time.sleep(0.1)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def stop(self) -> None:
        """Stop every worker now: a cancel, or a stage that will never be fed."""
        self.scheduler.cancel()
        for slot in self.slots:
            slot.stop()
        for thread in self.threads:
            thread.join()
        shutil.rmtree(self.run_dir, ignore_errors=True)


class _Slot:
    """One worker: its own /pfs tree and one long-lived process."""

    def __init__(self, farm: LocalFarm, pipeline: str, spec: dict, scope: str, root: Path,
                 scheduler: _Scheduler, tracker: _ProgressTracker, cpus: set[int]) -> None:
        self.farm, self.pipeline, self.spec, self.scope = farm, pipeline, spec, scope
        self.cpus = cpus
        self.pfs = root / "pfs"
        self.scheduler, self.tracker = scheduler, tracker
        self.current: _Task | None = None
        # ``current`` is shared by the NextDatum handler and this slot's thread; a handler that
        # belongs to a process that has since died (an older generation) must not touch it.
        self._lock = threading.Lock()
        self._generation = 0
        self._links: dict[str, str] = {}  # /pfs input links of the datum laid out last
        self.process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        log_dir = farm.root / "logs" / pipeline / scope
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{root.parent.name}-{root.name}.log"

    def run(self) -> None:
        # Pin this thread: the worker processes it starts inherit its CPUs, and so do the
        # NextDatum handler threads, which then run where their worker sits waiting for them.
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, self.cpus)
        try:
            self._run_batched()
        except OSError as error:  # the state disk is full or gone: settle everything, clearly
            self._abandon(error)

    def _abandon(self, error: OSError) -> None:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            message = f"cannot write the farm's state ({error.strerror}); free some space and run again"
        else:
            message = f"{error.strerror or error}" + (f" ({error.filename})" if error.filename else "")
        with self._lock:
            task, self.current = self.current, None
        if task is not None:
            self.scheduler.finish(task, message)
        self.scheduler.fail_all(message)

    def stop(self) -> None:
        self._stopping.set()
        if self.process and self.process.poll() is None:
            self.process.terminate()

    # -- per-datum setup, as a pipeline pod lays out /pfs ----------------------------------------

    def _prepare(self, task: _Task) -> dict[str, str]:
        """Lay out /pfs for the datum; links shared with the previous datum (its blend) stay put.

        Runs once per tile on the hand-off's critical path, so paths are plain strings.
        """
        out = os.path.join(self.pfs, "out")
        try:
            os.mkdir(out)  # the last datum's output went to the store in one rename
        except FileNotFoundError:  # the worker's first datum
            os.makedirs(out)
        except FileExistsError:  # a failed datum's partial output
            shutil.rmtree(out)
            os.mkdir(out)
        pfs, repos = str(self.pfs), str(self.farm.repos)
        links = {f"{pfs}/{item.name}{item.path}".rstrip("/"): f"{repos}/{item.repo}{item.path}".rstrip("/")
                 for item in task.datum.inputs}
        for link, target in self._links.items():
            if links.get(link) != target:
                with suppress(FileNotFoundError):
                    os.unlink(link)
        for link, target in links.items():
            if self._links.get(link) != target:
                _place_input(target, link)
        self._links = links
        env = {
            "PACH_JOB_ID": self.scope,
            "PACH_DATUM_ID": task.id,
            "PPS_PIPELINE_NAME": self.pipeline,
            "PACH_OUTPUT_COMMIT_ID": self.scope,
        }
        for item, link in zip(task.datum.inputs, links, strict=True):
            env[item.name] = link
            env[f"{item.name}_COMMIT"] = self.scope
            if item.join_key:
                env[f"PACH_DATUM_{item.name}_JOIN_ON"] = item.join_key
        return env

    def _finish(self, task: _Task, error: str | None) -> None:
        if error is None:
            try:
                self.farm.commit_datum(self.pipeline, task.id, os.path.join(self.pfs, "out"))
            except OSError as failure:
                error = f"could not store the output: {failure}"
        if error is not None:
            self._append_log(f"datum {task.datum.key()} failed (attempt {task.attempts + 1}): {error}")
        settled = self.scheduler.finish(task, error)
        if settled:
            self.tracker.datum_settled(self.pipeline, failed=error is not None)

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.spec["transform"].get("env", {}))
        env.update({"FARM_PFS": str(self.pfs), "FARM_THREADS": str(len(self.cpus)),
                    "PYTHONUNBUFFERED": "1"})
        return env

    def _start(self, env: dict[str, str]) -> subprocess.Popen:
        argv, extra = self.farm.host.transform_argv(self.spec["transform"]["cmd"])
        log = self.log_path.open("ab")
        try:
            process = subprocess.Popen(argv, env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        finally:
            log.close()
        # Renderers yield the CPU to the farm (whose datum hand-offs they wait on), to a splitter or
        # merger on the job's critical path, and to the user's own Blender; render threads, started
        # later, inherit this niceness.
        if self.pipeline == "renderer":
            try:
                os.setpriority(os.PRIO_PROCESS, process.pid, WORKER_NICENESS)
            except ProcessLookupError:
                pass  # it already exited; its slot will notice
        return process

    def _append_log(self, line: str) -> None:
        try:
            with self.log_path.open("a", encoding="utf-8") as log:
                log.write(line + "\n")
        except OSError:
            pass  # a lost log line must not take the worker down with it

    def _error_from_log(self, code: int) -> str:
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        errors = [line for line in lines if line.startswith("error:")]
        detail = errors[-1][len("error:"):].strip() if errors else (lines[-1] if lines else "")
        return f"exit code {code}: {detail}" if detail else f"exit code {code}"

    # -- datum batching: one process, fed through NextDatum ---------------------------------------

    def _run_batched(self) -> None:
        failed_starts = 0
        while not self.scheduler.drained() and not self._stopping.is_set():
            no_more, took_any, released, waiting = (threading.Event() for _ in range(4))

            handler = functools.partial(self._next_datum, no_more, took_any, released, waiting, self._generation)
            server, port = pachyderm.serve_worker_api(handler)
            try:
                with self.farm.host.scratch() as scratch:  # held until the process has exited
                    self.process = self._start({**self._base_env(), **scratch, "PPS_WORKER_GRPC_PORT": str(port)})
                    hung = self._watch(no_more, waiting)
                    if self.process.poll() is None:  # done or stopped: it waits in NextDatum, as on pachd
                        liveness.end(self.process)
                    elif hung or (not no_more.is_set() and not self._stopping.is_set()):
                        failed_starts = self._worker_died(took_any.is_set(), failed_starts)
            finally:
                released.set()
                server.stop(None)

    def _watch(self, no_more: threading.Event, waiting: threading.Event) -> bool:
        """Wait while the worker runs; kill it if it stalls (``liveness``), saying so in its log. True if it hung."""
        watch = liveness.Watch(self.process.pid)
        while self.process.poll() is None and not no_more.is_set() and not self._stopping.is_set():
            if waiting.is_set():  # inside NextDatum it waits on the farm: not a stall
                watch.reset()
            elif watch.stalled():
                with self._lock:
                    task = self.current
                doing = f"on {_tile_of(task.datum.key())}" if task else "while starting"
                self._append_log(f"error: {self.pipeline} worker (pid {self.process.pid}) stopped responding "
                                 f"{doing}: no CPU time for {watch.limit:.0f} s; it was ended (its log: "
                                 f"{self.log_path}; {liveness.STALL_ENV} sets the limit)")
                self.process.kill()
                self.process.wait()
                return True
            time.sleep(0.05)
        return False

    def _next_datum(self, no_more: threading.Event, took_any: threading.Event, released: threading.Event,
                    waiting: threading.Event, generation: int, error: str) -> list[str] | None:
        """The Worker API's NextDatum: settle the datum just processed, lay out the next one."""
        waiting.set()
        try:
            return self._next_datum_env(no_more, took_any, released, generation, error)
        except OSError as failure:
            self._abandon(failure)
            no_more.set()
            return None
        finally:
            waiting.clear()

    def _next_datum_env(self, no_more: threading.Event, took_any: threading.Event, released: threading.Event,
                        generation: int, error: str) -> list[str] | None:
        with self._lock:
            if generation != self._generation:
                return None  # this process died; its datum was already settled
            task, self.current = self.current, None
        if task is not None:
            self._finish(task, error or None)
        task = self.scheduler.take()
        if task is None:  # like pachd, leave the call hanging until the process is stopped
            no_more.set()
            released.wait(60)
            return None
        with self._lock:
            if generation != self._generation:  # the process died while we waited for work
                self.scheduler.requeue(task)
                return None
            self.current = task
            took_any.set()
            env = self._prepare(task)
            _overwrite(self.pfs / ".env", "".join(f"{k}={v}\n" for k, v in env.items()))
        return [f"{k}={v}" for k, v in env.items()]

    def _worker_died(self, took_any: bool, failed_starts: int) -> int:
        """A worker process died (crash, OOM, kill -9): requeue its datum elsewhere and restart."""
        code = self.process.returncode
        self._append_log(f"worker process exited unexpectedly with code {code}; starting a new one")
        with self._lock:  # waits for a handler still laying out a datum for the dead process
            self._generation += 1
            task, self.current = self.current, None
        if task is not None:
            self._finish(task, f"worker process died ({self._error_from_log(code)})")
            return 0
        failed_starts = 0 if took_any else failed_starts + 1
        if failed_starts >= 3:
            self.scheduler.fail_all(f"worker cannot start: {self._error_from_log(code)}")
        return failed_starts


class _ProgressTracker:
    """Turns datum completions into ``Progress`` snapshots, with an ETA from the tile rate."""

    def __init__(self) -> None:
        self.on_progress: Callable[[Progress], None] = lambda progress: None  # set once a caller listens
        self._lock = threading.Lock()
        self.stage_name = "splitter"
        self.tiles_total = self.tiles_done = self.tiles_failed = 0
        self.frames_total = self.frames_merged = 0
        self._started = time.monotonic()
        self._skipped = 0

    def stage(self, name: str, total: int, done: int) -> None:
        with self._lock:
            self.stage_name = name
            if name == "renderer":
                self.tiles_total, self.tiles_done, self._skipped = total, done, done
                self._started = time.monotonic()
        self._emit()

    def datum_settled(self, pipeline: str, failed: bool) -> None:
        with self._lock:
            if pipeline == "renderer":
                self.tiles_done += 1
                self.tiles_failed += int(failed)
        self._emit()

    def done(self, frames_merged: int) -> None:
        with self._lock:
            self.stage_name = "done"
            self.frames_merged = frames_merged
        self._emit()

    def _emit(self) -> None:
        with self._lock:
            eta = None
            rendered = self.tiles_done - self._skipped
            if self.stage_name == "renderer" and rendered > 0:
                rate = rendered / max(1e-6, time.monotonic() - self._started)
                eta = (self.tiles_total - self.tiles_done) / rate
            progress = Progress(self.stage_name, self.tiles_done, self.tiles_total, self.tiles_failed,
                                self.frames_merged, self.frames_total, eta)
        self.on_progress(progress)


def _visible_files(folder: Path | str) -> Iterator[tuple[str, str]]:
    """(relative POSIX path, full path) of every file under ``folder``, hidden ones left out.

    ``os.walk`` and string slicing rather than ``Path.rglob``: it runs per tile.
    """
    start = len(os.fspath(folder).rstrip(os.sep)) + 1
    for top, _dirs, files in os.walk(folder):
        prefix = top[start:].replace(os.sep, "/")
        for name in files:
            if not name.startswith("."):
                yield (f"{prefix}/{name}" if prefix else name), os.path.join(top, name)


def _overwrite(path: Path, text: str) -> None:
    """Replace a small file's contents without truncating it to zero first.

    Truncating frees the file's block and the write takes a new one: about 0.2 ms
    per call on this project's test machine, against 0.01 ms for writing in place.
    """
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def _place_input(target: str, link: str) -> None:
    """Show a datum's input at its /pfs path: a file as a hard link, a directory as a symlink.

    A hard link allocates no inode, and removing it frees none. That matters once per
    tile: ext4 without a journal makes every new inode scan past the inodes freed in
    the last minutes, so swapping a symlink per tile slowed every file created after it.
    A hard link also keeps the transform from reaching the rest of the repo through it.
    """
    for _ in range(2):
        try:
            os.link(target, link)
            return
        except FileNotFoundError:
            if not os.path.exists(os.path.dirname(link)):  # the first datum of an input: make its folders once
                os.makedirs(os.path.dirname(link))
                continue
        except OSError:
            pass  # a directory (EPERM), or a file system without hard links
        os.symlink(target, link)  # a missing target too: the transform then says what is missing
        return


def _same_file(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            chunk = fa.read(1 << 20)
            if chunk != fb.read(1 << 20):
                return False
            if not chunk:
                return True


def _tile_of(datum_key: str) -> str:
    """``blends:/job|splitter:/job/tiles/000003_0007.json`` -> ``frame 3 tile 7``."""
    name = datum_key.rsplit("/", 1)[-1].removesuffix(".json")
    return describe_piece(name) or name
