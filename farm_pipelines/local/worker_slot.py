"""One worker of a stage: a long-lived process fed datums through the Worker API.

Every transform uses ``datum_batching``: a worker starts its process once, serves
it ``NextDatum`` on a loopback port (``worker_api_server``), and on each call
settles the datum just processed and lays out the next (``worker_pfs``). A worker
process that dies has its datum retried and is started again; one that stalls is
ended (``liveness``). A worker's own thread that fails settles what it holds and
the stage's queue, so the other workers never wait for a datum nobody runs. A
worker its pool no longer needs (``WorkerPool.fit``, or memory) retires: at once
when idle, else after its datum; whatever was taken for it is handed back.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import subprocess
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from farm_pipelines import gpu, liveness
from farm_pipelines.local.progress import ProgressTracker
from farm_pipelines.local.scheduler import Task, describe_datum
from farm_pipelines.local.worker_api_server import serve_worker_api
from farm_pipelines.local.worker_pfs import WorkerPfs

if TYPE_CHECKING:
    from farm_pipelines.local.workers import WorkerPool

WORKER_NICENESS = 10


class Slot:
    """One worker: its own /pfs tree and one long-lived process."""

    def __init__(self, pool: WorkerPool, spec: dict, scope: str, root: Path, tracker: ProgressTracker,
                 plan: gpu.WorkerPlan) -> None:
        self.pool, self.farm, self.pipeline, self.spec, self.scope = pool, pool.farm, pool.pipeline, spec, scope
        farm, pipeline = self.farm, self.pipeline
        self.plan = plan
        self.cpus = set(plan.cpus)
        self.pfs = root / "pfs"
        self.layout = WorkerPfs(self.pfs, farm.repos, pipeline, scope)
        self.scheduler, self.tracker = pool.scheduler, tracker
        self.retiring = False  # the pool needs this worker no more: it stops once it holds no datum
        self.loaded = False  # its process has taken a datum, so it has the scene loaded
        self.current: Task | None = None
        # ``current`` is shared by the NextDatum handler and this slot's thread; a handler that
        # belongs to a process that has since died (an older generation) must not touch it.
        self._lock = threading.Lock()
        self._generation = 0
        self.process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        log_dir = farm.root / "logs" / pipeline / scope
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{root.parent.name}-{root.name}.log"
        self.name = f"worker {root.name}"
        self.report_path = log_dir / f"{root.parent.name}-{root.name}.device.json"
        self._reported = False

    def run(self) -> None:
        # Pin this thread: the worker processes it starts inherit its CPUs, and so do the
        # NextDatum handler threads, which then run where their worker sits waiting for them.
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, self.cpus)
        self.scheduler.join(self.plan.kind)
        try:
            self._run_batched()
        except OSError as error:  # the state disk is full or gone: settle everything, clearly
            self._end_process()
            self._abandon(_os_error_message(error), from_thread=True)
        except Exception as error:  # a fault of the farm itself: one line for the run, the traceback in the log
            self._append_log(traceback.format_exc())
            self._end_process()
            detail = " ".join(str(error).split())  # one line, whatever the exception says
            self._abandon(f"the local farm's {self.pipeline} worker failed: {type(error).__name__}: {detail} "
                          f"(traceback in {self.log_path})", from_thread=True)
        finally:
            self.scheduler.leave(self.plan.kind)

    def _abandon(self, message: str, from_thread: bool = False) -> None:
        """Fail this worker's datum and the stage's queue with ``message`` (``Scheduler.give_up``).

        From this slot's own thread, a handler still running for its process is
        disowned first (a new generation), so it hands any datum it takes back to
        the queue instead of holding it where nobody will settle it.
        """
        with self._lock:
            if from_thread:
                self._generation += 1
            task, self.current = self.current, None
        self.scheduler.give_up(task, message)

    def _end_process(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        self._stopping.set()
        if self.process and self.process.poll() is None:
            self.process.terminate()

    def retire(self, reason: str) -> None:
        """Stop for good, now if idle (waiting in NextDatum or starting Blender), else after its datum."""
        self.retiring = True
        self._append_log(f"stopped: {reason}")
        if self.current is None:  # one taken meanwhile is handed back (``_release``)
            self.stop()

    def _release(self) -> None:
        """This worker stopped and its process has exited: hand back a datum taken for it, which it
        never settles, and disown any handler still waiting on the scheduler (it requeues what it takes)."""
        with self._lock:
            self._generation += 1
            task, self.current = self.current, None
        if task is not None:
            self.scheduler.requeue(task)
        self.pool.guard.release(self)

    def _finish(self, task: Task, error: str | None) -> None:
        if error is None:
            try:
                self.farm.store.commit(self.pipeline, task.id, self.layout.out)
            except OSError as failure:
                error = f"could not store the output: {failure}"
        if error is not None:
            self._append_log(f"datum {task.datum.key()} failed (attempt {task.attempts + 1}): {error}")
        settled = self.scheduler.finish(task, error)
        if settled:
            self.tracker.datum_settled(self.pipeline, failed=error is not None)
        alive = self.process is not None and self.process.poll() is None  # it waits in NextDatum now
        if self.pool.guard.settled(self.process.pid if alive else None) and self.pipeline == "renderer":
            self.pool.bound_by_memory()
        self.pool.guard.release(self)  # after the decision, so no worker it stops takes a datum first
        if not self._reported:
            self._report_device()

    def _report_device(self) -> None:
        """Say once what this worker renders on (``worker 0: OPTIX NVIDIA ...``), and warn of a CPU fallback."""
        try:
            report = json.loads(self.report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # not written yet (this worker's first datum failed before loading the scene)
        self._reported = True
        pinned = f" (given {self.plan.gpu.backend} {self.plan.gpu.name})" if self.plan.gpu else ""
        if report.get("warning"):
            self.farm.warn(f"{self.name}: {report['warning']}{pinned}")
        else:
            self.farm.log(f"{self.name}: renders on {report['device']}")

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.spec["transform"].get("env", {}))
        env.update({"FARM_PFS": str(self.pfs), "FARM_THREADS": str(len(self.cpus)),
                    "PYTHONUNBUFFERED": "1", gpu.REPORT_ENV: str(self.report_path),
                    gpu.BACKEND_ENV: self.farm.gpu_backend})
        if self.plan.gpu:  # pinned by Cycles' own device selection: the id stays valid whatever else is visible
            env.update({gpu.DEVICE_ENV: self.plan.gpu.id, gpu.BACKEND_ENV: self.plan.gpu.backend})
        elif self.pipeline == "renderer" and (self.farm.probe_failed or any(plan.gpu for plan in self.farm.plans)):
            env[gpu.BACKEND_ENV] = "CPU"  # the GPUs have workers of their own, or none could be listed
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
            with self.log_path.open("a", encoding="utf-8", errors="backslashreplace") as log:
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
            server, port = serve_worker_api(handler)
            try:
                with self.farm.host.scratch() as scratch:  # held until the process has exited
                    self.process = self._start({**self._base_env(), **scratch, "PPS_WORKER_GRPC_PORT": str(port)})
                    self.loaded = False
                    hung = self._watch(no_more, waiting)
                    if self.process.poll() is None:  # done or stopped: it waits in NextDatum, as on pachd
                        liveness.end(self.process)
                    elif hung or (not no_more.is_set() and not self._stopping.is_set()):
                        failed_starts = self._worker_died(took_any.is_set(), failed_starts)
            finally:
                released.set()
                server.stop(None)
            if self._stopping.is_set():
                self._release()

    def _watch(self, no_more: threading.Event, waiting: threading.Event) -> bool:
        """Wait while the worker runs; kill it if it stalls (``liveness``), saying so in its log. True if it hung."""
        watch = liveness.Watch(self.process.pid)
        while self.process.poll() is None and not no_more.is_set() and not self._stopping.is_set():
            if waiting.is_set():  # inside NextDatum it waits on the farm: not a stall
                watch.reset()
            elif watch.stalled():
                with self._lock:
                    task = self.current
                doing = f"on {describe_datum(task.datum.key())}" if task else "while starting"
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
            self._abandon(_os_error_message(failure))
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
        while True:
            if self.retiring:
                self._stopping.set()
                no_more.set()
                released.wait(60)
                return None
            if self.pool.guard.shut_for(self):  # another worker renders the first datum alone
                self.pool.guard.wait_turn(self._leaving)
                if self.retiring or not self._leaving():
                    continue  # else stopping: take() ends on a cancel, and a task taken now goes back
            task = self.scheduler.take(self.plan.kind)
            if task is None:  # like pachd, leave the call hanging until the process is stopped
                no_more.set()
                released.wait(60)
                return None
            with self._lock:
                if generation != self._generation or self._stopping.is_set() or self.retiring:
                    self.scheduler.requeue(task)  # the process died or stops while we waited for work
                    if not self.retiring:
                        return None
                    continue
                if self.pool.guard.admit(self):
                    self.current = task
                    took_any.set()
                    self.loaded = True
                    env = self.layout.lay_out(task)
                    return [f"{k}={v}" for k, v in env.items()]
                self.scheduler.requeue(task)  # the gate shut while this one waited for work
            self.pool.guard.wait_turn(self._leaving)

    def _leaving(self) -> bool:
        return self._stopping.is_set() or self.retiring or self.scheduler.cancelled

    def _worker_died(self, took_any: bool, failed_starts: int) -> int:
        """A worker process died (crash, OOM, kill -9): requeue its datum elsewhere and restart."""
        code = self.process.returncode
        self._append_log(f"worker process exited unexpectedly with code {code}; starting a new one")
        reason = self._error_from_log(code)  # before taking the datum: if this raises, ``run`` still settles it
        with self._lock:  # waits for a handler still laying out a datum for the dead process
            self._generation += 1
            task, self.current = self.current, None
        if task is not None:
            self._finish(task, f"worker process died ({reason})")
            return 0
        failed_starts = 0 if took_any else failed_starts + 1
        if failed_starts >= 3:
            # Given up, not only failed: a stage still being fed (the merger) would start it again and again.
            self.scheduler.give_up(None, f"worker cannot start: {reason}")
        return failed_starts


def _os_error_message(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot write the farm's state ({error.strerror}); free some space and run again"
    return f"{error.strerror or error}" + (f" ({error.filename})" if error.filename else "")
