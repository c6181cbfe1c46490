"""A job's folder, the same on the local farm and on Pachyderm: ``job.json`` beside ``scene/``.

``scene/`` holds ``scene.blend`` and ``files/``: the blend refers to everything it needs
by relative paths into ``files/`` (``farm_pipelines.dependencies``), so the renderer,
opening ``scene/scene.blend`` where it lies in ``/pfs/blends/<job>/``, finds its textures
and caches beside it. ``job.json`` (the settings) stays outside ``scene/``, which is all
the renderer's ``blends`` input covers (glob ``/(*)/scene``): other frames or another
output format change no renderer datum's hash, so their tiles are reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

from farm_pipelines.atomic_files import copy_file
from farm_pipelines.carried import Carried

#: The folder of what renders: the renderer's ``blends`` input (its glob ``/(*)/scene`` names it too).
SCENE = "scene"
JOB_JSON = "job.json"
BLEND = "scene.blend"
FILES = "files"
#: Where a blend's path to a file that does not travel points instead (``dependencies``): nothing is there.
NOT_CARRIED = "not-carried"


def scene_folder(job_dir: Path) -> Path:
    """``scene.blend`` and the ``files/`` it uses: all a renderer reads."""
    return job_dir / SCENE


def scene_blend(job_dir: Path) -> Path:
    """The blend a stage opens in a job folder (``/pfs/blends/<job>`` on a worker)."""
    return blend_in(scene_folder(job_dir))


def blend_in(scene: Path) -> Path:
    """The blend in a scene folder: the renderer's ``blends`` input is the scene folder itself."""
    return scene / BLEND


def carried_files(job_dir: Path) -> Path:
    """The folder of the files the job carries (``files/<key>/<name>``)."""
    return scene_folder(job_dir) / FILES


def job_json(job_dir: Path) -> Path:
    return job_dir / JOB_JSON


def not_carried(path: bytes) -> bool:
    """Whether a path, as the job's blend stores it, names a file that did not travel (the farm's own
    output, a pipe, a device): no render reads it, so the scene's fingerprint leaves its image out."""
    return path.startswith(f"//{FILES}/{NOT_CARRIED}/".encode())


def scene_fingerprint(blend_fingerprint: str, carried: Carried) -> str:
    """Changes when what renders changes: the job's blend, any file it carries, or which are missing.

    ``blend_fingerprint`` is the blend's by its content (``farm_pipelines.blend_fingerprint``),
    not its bytes: Blender's saves are not byte-stable, and the add-on saves a copy from each
    session. A carried file's content is in its hash; a file that went missing (or came back)
    changes the list of missing ones. The settings are not in it: they are ``job.json``'s.
    """
    digest = hashlib.sha256(f"blend\0{blend_fingerprint}\0".encode())
    for file in carried.files:
        digest.update(f"{file.path}\0{file.sha256}\0".encode())
    for missing in carried.missing:
        digest.update(f"missing\0{missing}\0".encode())
    return digest.hexdigest()


def holds_scene(folder: Path, carried: Carried) -> bool:
    """Whether ``folder`` has its scene.blend and every carried file at its size."""
    if not scene_blend(folder).is_file():
        return False
    for file in carried.files:
        path = scene_folder(folder) / file.path
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


def link_or_copy(source: Path, destination: Path) -> None:
    """``destination`` becomes ``source``'s content: a new hard link swapped in, or a copy."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temp = destination.with_name(f".{destination.name}.link")
    temp.unlink(missing_ok=True)
    try:
        os.link(source, temp)
    except OSError:
        copy_file(source, destination)
        return
    os.replace(temp, destination)


def same_file(a: Path, b: Path) -> bool:
    if os.path.samefile(a, b):
        return True
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            chunk = fa.read(1 << 20)
            if chunk != fb.read(1 << 20):
                return False
            if not chunk:
                return True
