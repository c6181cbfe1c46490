"""A pipeline stage run by a pachd worker's rules (``LocalFarm(faithful=True)``), each cited at tag v2.7.0.

- The job's datums to process are those not processed, with the same hash, by the
  pipeline's last successful job (``transform/pending_job.go``, ``pendingJob.load``
  picks that base; ``worker.go``, ``skippableDatum`` wants state PROCESSED).
- They are cut into datum sets (``pachd_rules.set_spec`` / ``cut_sets``), in datum-ID
  order for a join (``datum/worker.go``, ``processMergeTask`` uploads without an index).
- Each worker starts the user code once per set and SIGKILLs its process group when
  the set ends (``transform/worker.go``, ``handleDatumSetBatching``; ``driver/driver_unix.go``,
  ``makeProcessGroupKiller``); the code gets each datum through ``NextDatum``.
- Every attempt gets fresh copies of its inputs (``datum_data``). A failed attempt
  kills and restarts the user code (the deferred restart in ``handleDatumSetBatching``),
  then runs ``err_cmd`` (``datum.go``, ``Datum.run``: exit 0 makes the datum RECOVERED),
  and the datum is tried again at once on the same worker up to ``datum_tries``
  (``Set.WithDatum``). A RECOVERED datum's output is not uploaded (``finish`` ->
  ``handleFailed``) and it is not skippable next time.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from farm_pipelines import liveness
from farm_pipelines.datums import Datum, DatumInput, enumerate_datums
from farm_pipelines.local import work_dirs
from farm_pipelines.local.datum_data import datum_data
from farm_pipelines.local.pachd_rules import DEFAULT_DATUM_TRIES, cut_sets, hash_datum, pachd_datum_id, set_spec
from farm_pipelines.local.progress import ProgressTracker
from farm_pipelines.local.worker_api_server import serve_worker_api
from farm_pipelines.local.worker_slot import WORKER_NICENESS
from farm_pipelines.local.workers import cpu_sets

if TYPE_CHECKING:
    from farm_pipelines.local.farm import LocalFarm


@dataclass
class FaithfulDatum:
    datum: Datum
    id: str  # PACH_DATUM_ID
    hash: str  # the skip identity (HashDatum)
    size: int  # input bytes, for size_bytes sets
    state: str = "PENDING"  # PROCESSED, SKIPPED, RECOVERED or FAILED
    uploaded: bool = False
    error: str = ""


@dataclass
class StageResult:
    datums: list[FaithfulDatum] = field(default_factory=list)
    sets: list[int] = field(default_factory=list)  # the size of each datum set run

    @property
    def failed(self) -> list[FaithfulDatum]:
        return [d for d in self.datums if d.state == "FAILED"]

    @property
    def lost(self) -> list[FaithfulDatum]:
        """Datums ``err_cmd`` recovered whose every try failed: the job goes on without their output."""
        return [d for d in self.datums if d.state == "RECOVERED" and not d.uploaded]


class FaithfulStage:
    """One job of one pipeline, on ``farm.workers`` workers that each take datum sets."""

    def __init__(self, farm: LocalFarm, spec: dict, scope: str, job_id: str, tracker: ProgressTracker,
                 cancel: threading.Event) -> None:
        self.farm, self.spec, self.scope, self.job_id = farm, spec, scope, job_id
        self.pipeline = spec["pipeline"]["name"]
        self.tracker, self.cancel = tracker, cancel
        self.record = farm.root / "faithful" / self.pipeline
        self.record.mkdir(parents=True, exist_ok=True)
        self._hashes: dict[Path, str] = {}

    def run(self) -> StageResult:
        result = StageResult()
        base = self._base()
        salt = self._salt()
        for datum in enumerate_datums(self.spec["input"], self.farm.repos, self.scope):
            hashed = hash_datum(salt, datum, self.farm.repos, self._content_hash)
            item = FaithfulDatum(datum, pachd_datum_id(datum, self.farm.repos), hashed, self._size(datum))
            if hashed in base and self.farm.store.is_done(self.pipeline, hashed):
                item.state, item.uploaded = "SKIPPED", True
            result.datums.append(item)
        pending = [d for d in result.datums if d.state == "PENDING"]
        if "join" in self.spec["input"]:
            pending.sort(key=lambda d: d.id)
        workers = min(self.farm.workers, max(1, len(pending)))
        number, size_bytes = set_spec(self.spec, len(pending), workers)
        sets = cut_sets(pending, [d.size for d in pending], number, size_bytes) if pending else []
        result.sets = [len(s) for s in sets]
        self.tracker.stage(self.pipeline, total=len(result.datums), done=len(result.datums) - len(pending))
        if pending:
            self.farm.log(f"{self.pipeline}: {len(pending)} of {len(result.datums)} datum(s) to process "
                          f"in {len(sets)} datum set(s)")
        self.farm.store.make_room(self.pipeline)
        tasks: queue.Queue[list[FaithfulDatum]] = queue.Queue()
        for datum_set in sets:
            tasks.put(datum_set)
        run = work_dirs.new_run_dir(self.farm.root, self.pipeline)  # locked: the next run knows it is live
        threads = [threading.Thread(target=SetWorker(self, run.path / str(i), cpus).run, args=(tasks,), daemon=True)
                   for i, cpus in enumerate(cpu_sets(workers))] if sets else []
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        run.remove()
        for item in pending:
            if item.state == "PENDING":  # its worker failed or the run was cancelled
                item.state = "FAILED"
                item.error = item.error or "its worker stopped before running it; the worker's log says why"
        self.farm.store.publish(self.pipeline, self.scope, [d.hash for d in result.datums if d.uploaded])
        if not result.failed:  # a job with a failed datum is never a base (pendingJob.load)
            self._save_base(base, result.datums)
        return result

    # -- the base and the salt -------------------------------------------------------------------

    def _salt(self) -> str:
        """A random salt made once per pipeline and kept across updates (``api_server.go``,
        ``initializePipelineInfo``)."""
        path = self.record / "salt"
        if not path.exists():
            path.write_text(uuid.uuid4().hex, encoding="utf-8")
        return path.read_text(encoding="utf-8").strip()

    def _base(self) -> set[str]:
        path = self.record / "base.json"
        return set(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else set()

    def _save_base(self, base: set[str], datums: list[FaithfulDatum]) -> None:
        """This job is now the base: its PROCESSED and skipped datums, plus other jobs' (which, in one
        pachd pipeline, this job would also have skipped and carried over)."""
        ours = {d.hash for d in datums}
        kept = (base - ours) | {d.hash for d in datums if d.state in ("PROCESSED", "SKIPPED")}
        temp = self.record / f".base.{uuid.uuid4().hex[:8]}"
        temp.write_text(json.dumps(sorted(kept)), encoding="utf-8")
        os.replace(temp, self.record / "base.json")

    # -- inputs ----------------------------------------------------------------------------------

    def _content_hash(self, item: DatumInput) -> str:
        source = item.source(self.farm.repos)
        if source not in self._hashes:
            digest = hashlib.sha256()
            for path in _files(source):
                digest.update(f"{path.relative_to(source.parent).as_posix()}\0{self.farm.store.file_hash(path)}\0"
                              .encode())
            self._hashes[source] = digest.hexdigest()
        return self._hashes[source]

    def _size(self, datum: Datum) -> int:
        total = 0
        for item in datum.inputs:
            total += sum(p.stat().st_size for p in _files(item.source(self.farm.repos)))
        return total


class SetWorker:
    """One worker: its own /pfs and Worker API port; a new user process for every datum set."""

    def __init__(self, stage: FaithfulStage, root: Path, cpus: set[int]) -> None:
        self.stage, self.cpus = stage, cpus
        self.farm, self.spec = stage.farm, stage.spec
        self.pfs = root / "pfs"
        self.pfs.mkdir(parents=True)
        self.tries = int(self.spec.get("datum_tries") or DEFAULT_DATUM_TRIES)
        self.lazy = {c["pfs"]["name"] for c in _pfs_children(self.spec["input"]) if c["pfs"].get("lazy")}
        log_dir = self.farm.root / "logs" / stage.pipeline / stage.scope
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{root.parent.name}-{root.name}.log"
        self.process: subprocess.Popen | None = None
        self._scratch: dict[str, str] = {}
        self._reports: queue.Queue[str] = queue.Queue()  # NextDatum errors of the current process
        self._answers: queue.Queue[list[str] | None] = queue.Queue()
        self.port = 0

    def run(self, tasks: queue.Queue[list[FaithfulDatum]]) -> None:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, self.cpus)  # the user processes inherit this thread's CPUs
        server, self.port = serve_worker_api(self._next_datum)
        # One TMPDIR and Blender user folder for the worker's life, as a pod's /tmp is an emptyDir that
        # outlives its killed user processes (v2.7.0 src/server/pps/server/worker_rc.go, workerPodSpec).
        with self.farm.host.scratch() as self._scratch:
            try:
                while not self.stage.cancel.is_set():
                    try:
                        datum_set = tasks.get_nowait()
                    except queue.Empty:
                        return
                    self._run_set(datum_set)
            except Exception:  # a fault of the farm itself: its datums settle as failed (FaithfulStage.run)
                self._log(traceback.format_exc())
            finally:
                self._stop()
                server.stop(None)

    def _next_datum(self, error: str) -> list[str] | None:
        """The Worker API: report the last datum's error (``Status.NextDatum``), block for the next env."""
        answers = self._answers
        self._reports.put(error)
        return answers.get()

    # -- a datum set: one user process ------------------------------------------------------------

    def _run_set(self, datum_set: list[FaithfulDatum]) -> None:
        set_root = self.pfs / ".scratch" / uuid.uuid4().hex  # forEachDatum's storage root
        set_root.mkdir(parents=True)
        try:
            started = self._start(len(datum_set))
            for item in datum_set:
                if started is not None:
                    item.state, item.error = "FAILED", f"error starting user code: {started}"
                else:
                    started = self._run_datum(item, set_root)
                self.stage.tracker.datum_settled(self.stage.pipeline, failed=item.state == "FAILED")
        finally:
            self._stop()  # handleDatumSetBatching's deferred stop: SIGKILL to the group
            shutil.rmtree(set_root, ignore_errors=True)

    def _run_datum(self, item: FaithfulDatum, set_root: Path) -> str | None:
        """Every attempt of one datum (``Set.WithDatum``); returns why the user code cannot restart, if so."""
        env = self._datum_env(item)
        for attempt in range(self.tries):
            with datum_data(self.pfs, set_root, item.id, item.datum, self.farm.repos, self.lazy, env) as folder:
                self._answers.put([f"{k}={v}" for k, v in env.items()])
                error = self._wait_report()
                if error is None:
                    self.farm.store.commit(self.stage.pipeline, item.hash, folder / "out")  # uploadOutput
                    item.state = "RECOVERED" if item.state == "RECOVERED" else "PROCESSED"
                    item.uploaded, item.error = True, ""
                    return None
                item.error = error
                if self.stage.cancel.is_set():
                    item.state = "FAILED"
                    return "cancelled"
                self._log(f"datum {item.id} failed (attempt {attempt + 1} of {self.tries}): {error}")
                self._stop()
                restart = self._start(None)
                if self._recovered(env):
                    item.state = "RECOVERED"
                if restart is not None:
                    break
        if item.state != "RECOVERED":
            item.state = "FAILED"
        return restart

    def _recovered(self, env: dict[str, str]) -> bool:
        """``err_cmd`` after a failed attempt (``driver.RunUserErrorHandlingCode``); exit 0 recovers."""
        command = self.spec["transform"].get("err_cmd")
        if not command:
            return False
        argv, extra = self.farm.host.transform_argv(command)
        with self.log_path.open("ab") as log:
            code = subprocess.run(argv, env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=600).returncode
        self._log(f"err_cmd exited with code {code}" + (": the datum is RECOVERED" if code == 0 else ""))
        return code == 0

    def _datum_env(self, item: FaithfulDatum) -> dict[str, str]:
        """``driver.UserCodeEnv``: the worker's environment plus the datum's variables."""
        env = self._worker_env()
        env.update({"PACH_DATUM_ID": item.id, "PACH_JOB_ID": self.stage.job_id,
                    "PACH_OUTPUT_COMMIT_ID": self.stage.job_id})
        for input_ in item.datum.inputs:
            env[input_.name] = f"{self.pfs}/{input_.name}{input_.path}".rstrip("/")
            env[f"{input_.name}_COMMIT"] = self.stage.job_id  # one commit set: every commit has the job's ID
            if input_.join_key:
                env[f"PACH_DATUM_{input_.name}_JOIN_ON"] = input_.join_key
        return env

    def _worker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.spec["transform"].get("env", {}))
        env.update({"FARM_PFS": str(self.pfs), "FARM_THREADS": str(len(self.cpus)), "PYTHONUNBUFFERED": "1",
                    "PPS_PIPELINE_NAME": self.stage.pipeline, "PPS_WORKER_GRPC_PORT": str(self.port)})
        return env

    # -- the user process ------------------------------------------------------------------------

    def _start(self, set_size: int | None) -> str | None:
        """Start the user code and wait for its first ``NextDatum``; returns an error if it exits first.

        v2.7.0 starts it with no job variables (``RunUserCode(ctx, logger, nil)``).
        """
        self._reports, self._answers = queue.Queue(), queue.Queue()
        argv, extra = self.farm.host.transform_argv(self.spec["transform"]["cmd"])
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, env={**self._worker_env(), **self._scratch, **extra}, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)  # its own group, killed as one
        what = f"datum set of {set_size}" if set_size is not None else "restart after a datum error"
        self._log(f"faithful worker: user code started (pid {self.process.pid}) for a {what}")
        if self.stage.pipeline.startswith("renderer"):
            try:
                os.setpriority(os.PRIO_PROCESS, self.process.pid, WORKER_NICENESS)
            except ProcessLookupError:
                pass
        return self._wait_report()

    def _wait_report(self) -> str | None:
        """The next ``NextDatum`` error (None for success), or why the process is gone."""
        watch = liveness.Watch(self.process.pid)
        while True:
            try:
                error = self._reports.get(timeout=0.05)
                return error or None
            except queue.Empty:
                pass
            code = self.process.poll()
            if code is not None:
                return f"user code exited prematurely (exit code {code})"
            if self.stage.cancel.is_set():
                return "cancelled"
            if watch.stalled():
                return f"user code stopped responding: no CPU time for {watch.limit:.0f} s"
            time.sleep(0.01)

    def _stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.wait()
            self._log(f"faithful worker: user code (pid {self.process.pid}) stopped")
            self.process = None
        self._answers.put(None)  # a NextDatum call of the killed process returns, CANCELLED

    def _log(self, line: str) -> None:
        with self.log_path.open("a", encoding="utf-8", errors="backslashreplace") as log:
            log.write(line + "\n")


def _files(source: Path) -> list[Path]:
    """The files of an input: the file itself, or every file under the folder, in a stable order."""
    return [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())


def _pfs_children(spec_input: dict) -> list[dict]:
    if "pfs" in spec_input:
        return [spec_input]
    return [c for key in ("join", "cross", "union", "group") for child in spec_input.get(key, [])
            for c in _pfs_children(child)]
