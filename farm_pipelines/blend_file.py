"""Cheap checks on a .blend path before any Blender process is started."""

from __future__ import annotations

import os
from pathlib import Path

from farm_pipelines.errors import BadInput

_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
_LFS = b"version https://git-lfs"


def check_blend_path(path: Path) -> Path:
    """Return the resolved path, or raise BadInput saying what is wrong with it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise BadInput(f"{path}: file not found")
    if path.is_dir():
        raise BadInput(f"{path}: is a directory, not a .blend file")
    if not os.access(path, os.R_OK):
        raise BadInput(f"{path}: cannot be read (check its permissions)")
    with path.open("rb") as handle:
        head = handle.read(64)
    if head.startswith(_LFS):
        raise BadInput(f"{path}: is a Git LFS pointer, not the scene; run 'git lfs pull' to fetch it")
    if not (head.startswith(b"BLENDER") or head.startswith(_GZIP) or head.startswith(_ZSTD)):
        raise BadInput(f"{path}: is not a .blend file")
    return path.resolve()
