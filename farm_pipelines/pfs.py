"""Where a pipeline's datum lives, read the way Pachyderm publishes it.

Pachyderm sets one environment variable per input, named after the input and
holding the path of that input's file or directory in the current datum. The
output directory is always ``/pfs/out``; the local farm points ``FARM_PFS`` at
its own per-worker root instead of ``/pfs``.
"""

from __future__ import annotations

import os
from pathlib import Path

from farm_pipelines.errors import FarmFailure


def pfs_root() -> Path:
    return Path(os.environ.get("FARM_PFS", "/pfs"))


def input_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise FarmFailure(f"input {name!r} is not set: this code runs as a Pachyderm pipeline transform")
    return Path(value)


def output_dir() -> Path:
    return pfs_root() / "out"


def threads() -> int:
    """Blender threads for this worker; 0 lets Blender use every core (a dedicated pod)."""
    return int(os.environ.get("FARM_THREADS", "0"))
