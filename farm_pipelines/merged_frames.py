"""What the merger writes for a job, spelled once for the merger, the local farm and the Pachyderm client.

Each merger datum is one frame: it writes ``/<job>/<frame:06d>.<ext>``, or, when the
frame cannot be merged (a tile that failed every try), ``/<job>/failed/<frame:06d>.txt``
holding one line that names the missing tiles. Separate files, because on Pachyderm
every frame is its own datum and datums must not write the same path.
"""

from __future__ import annotations

import re

FAILED_DIR = "failed"
_FRAME_FILE = re.compile(r"^(-?\d+)\.[A-Za-z0-9]+$")


def frame_name(frame: int, extension: str) -> str:
    """``000003.png`` for frame 3 with extension ``.png`` (negative frames: ``-00003.png``)."""
    return f"{frame:06d}{extension}"


def failure_path(frame: int) -> str:
    """Where the merger records why ``frame`` was not merged, relative to the job's folder."""
    return f"{FAILED_DIR}/{frame:06d}.txt"


def frame_of(file_name: str) -> int | None:
    """The frame a merged file is, or None for anything else (a hidden file, a failure record)."""
    match = _FRAME_FILE.match(file_name)
    return int(match.group(1)) if match else None
