"""Telling a working Blender process from a hung one, and ending the hung ones.

A Blender that renders, loads, packs or stitches uses CPU; one stuck in a
deadlock (bpy 4.5 once hung in a futex wait at exit, after writing its result)
uses none. So a process the farm is waiting on that has used no CPU time for
``FARM_STALL_SECONDS`` (default 120) is hung: it is ended and reported in one
line. How long a process may work is never limited, only how long it may do
nothing. A process that has written its result but does not exit is ended after
a few seconds, and that is not a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from farm_pipelines.errors import FarmFailure

STALL_ENV = "FARM_STALL_SECONDS"
DEFAULT_STALL_SECONDS = 120.0
#: How long a process that has written its result may take to exit before it is ended.
EXIT_GRACE_SECONDS = 5.0
_SAMPLE_SECONDS = 1.0  # CPU time is read at most this often


def stall_seconds() -> float:
    try:
        return max(0.5, float(os.environ.get(STALL_ENV) or DEFAULT_STALL_SECONDS))
    except ValueError:
        return DEFAULT_STALL_SECONDS


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a running process, or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:  # Linux
            fields = stat.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None  # Linux, and the process is gone
    except (OSError, ValueError, IndexError):
        return None
    if sys.platform == "win32" or not shutil.which("ps"):
        return None
    return _ps_cpu_seconds(pid)


def _ps_cpu_seconds(pid: int) -> float | None:
    """``ps -o time=`` (macOS, BSD): ``[[dd-]hh:]mm:ss[.ss]``."""
    try:
        text = subprocess.run(["ps", "-o", "time=", "-p", str(pid)], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not text:
        return None
    days, _, clock = text.rpartition("-")
    seconds = 0.0
    for part in clock.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds + 86400 * int(days or 0)


class Watch:
    """Whether one process has stalled: used no CPU time for the stall limit while it was watched."""

    def __init__(self, pid: int, limit: float | None = None) -> None:
        self.pid = pid
        self.limit = stall_seconds() if limit is None else limit
        self.reset()

    def reset(self) -> None:
        """Start counting afresh, e.g. while the process waits on the farm itself, which is not a stall."""
        self._since = self._sampled = time.monotonic()
        self._cpu: float | None = None  # unknown: the next sample sets it

    def stalled(self) -> bool:
        now = time.monotonic()
        if now - self._sampled < _SAMPLE_SECONDS:
            return False
        self._sampled = now
        cpu = cpu_seconds(self.pid)
        if cpu is None or cpu != self._cpu:
            self._cpu, self._since = cpu, now
            return False
        return now - self._since >= self.limit


def end(process: subprocess.Popen, grace: float = 10.0) -> None:
    """Ask a process to stop, then kill it if it has not after ``grace`` seconds; reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_to_result(argv: list[str], env: dict[str, str], result: Path, what: str) -> tuple[int, str]:
    """Run a process that writes ``result`` (atomically) and exits; return its exit code and stderr.

    One that has written ``result`` but is still running ``EXIT_GRACE_SECONDS`` later
    is ended and counts as exit code 0. One that stalls first is killed, and
    ``FarmFailure`` says so in one line, naming ``what`` it was doing.
    """
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=stderr)
        watch, written, code = Watch(process.pid), None, None
        try:
            while (code := process.poll()) is None:
                if result.exists():
                    written = written or time.monotonic()
                    if time.monotonic() - written >= EXIT_GRACE_SECONDS:
                        end(process, grace=2.0)
                        code = 0
                        break
                elif watch.stalled():
                    process.kill()
                    process.wait()
                    raise FarmFailure(f"Blender {what} stopped responding (no CPU time for {watch.limit:.0f} s) "
                                      f"and was ended; run it again, and if it recurs open the scene in Blender "
                                      f"to check it ({STALL_ENV} sets the limit)")
                time.sleep(0.05)
        finally:
            if process.poll() is None:  # interrupted (Ctrl-C): leave no Blender behind
                process.kill()
                process.wait()
        stderr.seek(0)
        return code, stderr.read().decode("utf-8", errors="replace")
