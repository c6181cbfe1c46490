"""Which Blender wrote a .blend, and whether the farm's workers are new enough to read it.

An older Blender opens a newer file with only a warning ("expect loss of data")
and renders what it understood, so a job saved by a newer Blender than its
workers is refused at submission, before anything is uploaded or rendered.
Versions compare by major and minor: a file format changes only between those.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from farm_pipelines.errors import BadInput, FarmFailure

#: Set in each pipeline's environment by ``farm deploy``: the worker image's Blender version.
WORKER_VERSION_ENV = "FARM_BLENDER_VERSION"


def shown(version: Sequence[int]) -> str:
    return ".".join(str(part) for part in version)


def header_version(path: Path) -> tuple[int, int]:
    """``(major, minor)`` from an uncompressed .blend header, as the job's copy is written.

    Up to 4.x the header is ``BLENDER-v405`` (pointer size, endianness, three digits);
    5.0 writes ``BLENDER17-01v0500`` (header size, format version, endianness, four digits).
    """
    with open(path, "rb") as handle:
        head = handle.read(17)
    if head[:7] != b"BLENDER":
        raise FarmFailure(f"{path}: not an uncompressed .blend file, so its Blender version is unknown")
    digits = head[13:17] if head[7:9].isdigit() else head[9:12]
    if not digits.isdigit():
        raise FarmFailure(f"{path}: its .blend header names no Blender version ({head!r})")
    number = int(digits)
    return number // 100, number % 100


def parse(text: str) -> tuple[int, ...]:
    """``"4.5.15"`` -> ``(4, 5, 15)``; at least major and minor."""
    parts = text.strip().split(".")
    if not 2 <= len(parts) <= 3 or not all(part.isdigit() for part in parts):
        raise BadInput(f"Blender version {text!r} is not understood: write it as 4.5 or 5.0.1")
    return tuple(int(part) for part in parts)


def require_readable(saved_by: str, saved_with: Sequence[int], workers: Sequence[int], workers_are: str,
                     fix: str) -> None:
    """Raise ``BadInput`` if ``saved_with`` is newer than the workers' Blender: one line, what to do.

    ``saved_by`` starts the line, e.g. ``"shot.blend: saved by"``; the version follows it.
    """
    if tuple(saved_with[:2]) > tuple(workers[:2]):
        raise BadInput(f"{saved_by} Blender {shown(saved_with[:2])}, newer than Blender {shown(workers)} that "
                       f"{workers_are}; {fix}")
