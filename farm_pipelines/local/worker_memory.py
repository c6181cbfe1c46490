"""What a stage's worker processes hold in memory, and whether the next one may take a datum yet.

A worker's need is the peak resident memory its process reached (``VmHWM`` in
/proc/<pid>/status), read when a datum settles, while the process waits in
NextDatum: Blender's own start, the scene, and the render's peak, all included.
Before anything is measured, N workers would load the scene at once; so when that
could overflow (the user set ``FARM_MEMORY_LIMIT``, or a lower bound of the need,
such as the splitter's peak with the scene open, times the workers exceeds the
memory available), one worker renders the first tile alone and the others wait
in NextDatum until it is measured. A small scene on a big machine is not gated,
so it pays nothing. Linux only: elsewhere nothing is measured or bounded.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from farm_pipelines.local import memory

#: A new decision needs the peak to have grown this much since the last one, so workers are not
#: retired one by one as the need creeps up, nor for a dip in memory that other programs cause.
_REDECIDE_GROWTH = 1.1
#: Once a need is known, a stage's workers are measured again at most this often: reading
#: /proc/<pid>/status costs tens of microseconds, which thousands of small tiles would notice.
_MEASURE_EVERY_S = 1.0


def measurable() -> bool:
    return os.path.exists("/proc/self/status")


def process_memory(pid: int, field: str) -> int | None:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of a live process, in bytes; None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            return memory.status_field(status.read(), field)
    except OSError:
        return None


def available_memory() -> int | None:
    """``MemAvailable`` of /proc/meminfo: what can be given to new work without swapping."""
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as meminfo:
            return memory.status_field(meminfo.read(), "MemAvailable")
    except OSError:
        return None


class MemoryGuard:
    """One stage's measured need per worker, and the gate that holds its first datum to one worker."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.need: int | None = None  # the highest peak any worker of the stage reached
        self._decided_for = 0  # the need the last decision was made for
        self._cond = threading.Condition()
        self._gated = False
        self._first: object | None = None  # the worker that renders alone until the need is known
        self._measured_at = -_MEASURE_EVERY_S

    def budget(self, held: int) -> int | None:
        """What the stage's workers may use: the user's limit, or what is available plus the ``held``
        bytes its workers already have; None where it cannot be read."""
        if self.limit is not None:
            return self.limit
        available = available_memory()
        return None if available is None else available + held

    def expect(self, estimate: int | None, workers: int, held: int) -> None:
        """Before the stage's first datum: gate it if a budget is set, or if ``estimate`` bytes per
        worker (a lower bound) for ``workers`` workers would not fit."""
        budget = self.budget(held)
        risky = bool(estimate) and budget is not None and estimate * workers > budget
        with self._cond:
            self._gated = workers > 1 and self.need is None and (self.limit is not None or risky)

    def admit(self, worker: object) -> bool:
        """May ``worker`` start a datum now? While the gate is closed, only the first to ask may."""
        with self._cond:
            if self._gated and self._first not in (None, worker):
                return False
            self._first = worker if self._gated else None
            return True

    def shut_for(self, worker: object) -> bool:
        """True while another worker renders the gate's first datum: ``worker`` should not take one."""
        with self._cond:
            return self._gated and self._first not in (None, worker)

    def wait_turn(self, give_up: Callable[[], bool]) -> None:
        """Wait until the gate's first datum is settled and decided on (or ``give_up`` says stop)."""
        with self._cond:
            while self._gated and self._first is not None and not give_up():
                self._cond.wait(0.2)

    def settled(self, pid: int | None) -> bool:
        """A datum settled: measure its worker's process (``pid``, None if it died). True when the need
        grew enough since the last decision that the caller should decide again how many workers fit."""
        now = time.monotonic()
        due = self.need is None or now - self._measured_at >= _MEASURE_EVERY_S
        peak = process_memory(pid, "VmHWM") if pid and due else None
        with self._cond:
            if peak is not None:
                self._measured_at, self.need = now, max(peak, self.need or 0)
            if self.need is None or self.need < self._decided_for * _REDECIDE_GROWTH:
                return False
            self._decided_for = self.need
            return True

    def release(self, worker: object) -> None:
        """``worker`` settled its datum, and the caller decided on its measurement, or it stopped: if it
        was the gate's first, the gate opens once a need is known, else the next worker goes alone."""
        with self._cond:
            if self._first is worker:
                self._first = None
                self._gated = self.need is None
                self._cond.notify_all()
