"""A job's folder: ``scene.blend``, ``job.json`` and ``files/``, the same on the local farm and on Pachyderm.

``scene.blend`` refers to everything it needs by relative paths into ``files/``
(``farm_pipelines.dependencies``), so the renderer, opening ``scene.blend`` where it
lies in ``/pfs/blends/<job>/``, finds its textures and caches beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from farm_pipelines.blend_cache import file_sha256
from farm_pipelines.job import JobSettings

if TYPE_CHECKING:  # workers read the layout without the tracer's dependencies
    from farm_pipelines.dependencies import Carried


def scene_blend(job_dir: Path) -> Path:
    """The blend a stage opens in a job folder (``/pfs/blends/<job>`` on a worker)."""
    return job_dir / "scene.blend"


def fingerprint(blend: Path, carried: Carried, settings: JobSettings) -> str:
    """Changes when the source blend, any file the job carries, or the settings change.

    A carried file's content is in its hash; a file that went missing (or came back)
    changes the list of missing ones. Reruns reuse tiles only while this stays the same.
    """
    digest = hashlib.sha256(json.dumps(settings.to_json(), sort_keys=True).encode())
    digest.update(f"{blend}\0{file_sha256(blend)}\0".encode())
    for file in carried.files:
        digest.update(f"{file.path}\0{file.sha256}\0".encode())
    for missing in carried.missing:
        digest.update(f"missing\0{missing}\0".encode())
    return digest.hexdigest()


def holds(folder: Path, carried: Carried) -> bool:
    """Whether ``folder`` has scene.blend, job.json and every carried file at its size."""
    if not ((folder / "scene.blend").is_file() and (folder / "job.json").is_file()):
        return False
    for file in carried.files:
        path = folder / file.path
        if not path.is_file() or path.stat().st_size != file.size:
            return False
    return True


def swap_in(fresh: Path, folder: Path) -> None:
    """Make ``fresh`` the job's folder in two renames; the old one, if any, is then removed."""
    old = folder.with_name(f".{folder.name}.old.{uuid.uuid4().hex[:8]}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(fresh, folder)
    shutil.rmtree(old, ignore_errors=True)


def files_of(folder: Path) -> list[str]:
    """Every file of a job folder, as POSIX paths relative to it, in a stable order."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
