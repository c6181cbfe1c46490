"""How many renderer workers fit in memory: the arithmetic, kept apart from reading /proc.

Every renderer worker is a Blender holding the whole scene, so the machine holds
``budget // need`` of them, where ``need`` is the peak memory one worker reached
(``VmHWM`` of its process) and ``budget`` is what the machine can give: its
``MemAvailable`` plus what the workers already hold, or ``FARM_MEMORY_LIMIT`` when
the user sets one. Sizes are binary: ``4G`` is 4 GiB, printed as ``4.0 GB``.
"""

from __future__ import annotations

import re

from farm_pipelines.errors import BadInput

LIMIT_ENV = "FARM_MEMORY_LIMIT"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``4G``, ``512M``, ``1.5GiB``, ``800MB`` or a plain byte count -> bytes; ValueError otherwise."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a size: {text!r}")
    size = int(float(match[1]) * _UNITS[match[2].upper()])
    if size <= 0:
        raise ValueError(f"not a size above zero: {text!r}")
    return size


def limit_from(value: str | None) -> int | None:
    """The user's memory budget for all renderer workers together (``FARM_MEMORY_LIMIT``), or None."""
    if not value or not value.strip():
        return None
    try:
        return parse_size(value)
    except ValueError:
        raise BadInput(f"{LIMIT_ENV}={value!r} is not a memory size; give one such as 4G or 512M, "
                       "or unset it to use the machine's available memory") from None


def status_field(text: str, name: str) -> int | None:
    """A ``kB`` field of /proc/meminfo or /proc/<pid>/status (``MemAvailable``, ``VmHWM``, ``VmRSS``) in bytes."""
    match = re.search(rf"^{name}:\s*(\d+)\s*kB", text, re.MULTILINE)
    return int(match[1]) * 1024 if match else None


def workers_that_fit(need: int, budget: int, workers: int) -> int:
    """How many of ``workers`` fit in ``budget`` bytes at ``need`` bytes each: never more, never fewer than one
    (a scene too big for even one worker is still tried once, rather than refused on a measurement)."""
    return max(1, min(workers, budget // max(1, need)))


def gb(size: int) -> str:
    return f"{size / (1 << 30):.1f} GB"


def bound_line(need: int, fitting: int, workers: int, budget: int, limited: bool) -> str:
    """The one line that says the memory bound and why."""
    where = f"the {gb(budget)} of {LIMIT_ENV}" if limited else f"{gb(budget)} available"
    return (f"the scene needs about {gb(need)} per worker; {fitting} of {workers} workers fit in {where}: "
            f"rendering with {fitting}")
