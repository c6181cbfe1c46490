"""Turn the user's scene and settings into a farm submission, on the main thread, without touching their session.

The scene is saved as a copy (unsaved changes included; the user's file path and
dirty flag stay as they were). The farm's own submission step then packs that
copy in a separate process, so nothing here packs or remaps the user's data.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bpy

from farm_pipelines.errors import BadInput
from farm_pipelines.host import Host
from farm_pipelines.job import FrameRange, JobSettings, TileSize

from . import preferences
from .properties import TILE_PRESETS, FarmSettings


@dataclass(frozen=True)
class Pachyderm:
    """Connection settings, copied out of the preferences for the background thread."""

    address: str | None  # None: the active pachctl context
    token: str
    tls: bool


@dataclass(frozen=True)
class Submission:
    """Everything the background thread needs: plain Python, no bpy."""

    blend: Path
    settings: JobSettings
    out_dir: Path
    display_name: str
    host: Host
    workers: int | None
    pachyderm: Pachyderm | None
    gpu_backend: str = "auto"  # the local farm's, from the preferences (``preferences.gpu_backend``)
    source_folder: Path | None = None  # the artist's .blend folder; ``blend`` is a copy elsewhere


def from_context(context: bpy.types.Context) -> Submission:
    """Check the settings, save the scene copy and describe the job; raises BadInput with a one-line reason."""
    scene = context.scene
    farm: FarmSettings = scene.render_farm
    prefs = preferences.get(context)
    if scene.camera is None:
        raise BadInput(f"scene {scene.name!r} has no active camera; set one in Scene Properties")
    pachyderm = None
    if farm.backend == "PACHYDERM":
        offline = online_access_problem()
        if offline:
            raise BadInput(offline)
        pachyderm = Pachyderm(prefs.address.strip() or None, prefs.token, prefs.use_tls)
    settings = JobSettings(tile=tile_size(farm, prefs.default_tile), frames=frame_range(farm),
                           file_format=farm.file_format, overscan=farm.overscan, strict=farm.strict,
                           sample_chunks=farm.sample_chunks)
    out_dir = output_folder(farm)
    stem = Path(bpy.data.filepath).stem if bpy.data.filepath else "untitled"
    return Submission(
        blend=save_copy(stem),
        settings=settings,
        out_dir=out_dir,
        display_name=f"{stem} {scene.name}",
        host=Host(blender=bpy.app.binary_path or None),
        workers=prefs.local_workers or None,
        pachyderm=pachyderm,
        gpu_backend=preferences.gpu_backend(context),
        source_folder=Path(bpy.data.filepath).parent if bpy.data.filepath else None,
    )


def tile_size(farm: FarmSettings, default_tile: str) -> TileSize:
    if farm.tile_size == "CUSTOM":
        return TileSize(farm.tile_width, farm.tile_height)
    preset = default_tile if farm.tile_size == "PREFERENCES" else farm.tile_size
    if preset == "AUTO":
        return TileSize(auto=True)
    edge = TILE_PRESETS[preset]
    return TileSize(edge, edge)


def frame_range(farm: FarmSettings) -> FrameRange:
    if farm.use_scene_frames:  # its range and its step (Output Properties > Frame Range), as Blender renders them
        return FrameRange()
    if farm.frame_end < farm.frame_start:
        raise BadInput(f"frame range {farm.frame_start}-{farm.frame_end} is empty: the end comes before the start")
    return FrameRange(farm.frame_start, farm.frame_end, farm.frame_step)


def online_access_problem() -> str | None:
    """Why Blender's rules forbid connecting to a cluster now, if they do; the local farm needs no network."""
    if bpy.app.online_access:
        return None
    if bpy.app.online_access_override:
        return ("online access is off because Blender was started in offline mode: restart it without "
                "--offline-mode to render on Pachyderm, or use the Local backend")
    return ("online access is off: allow it in Preferences > System > Network to render on Pachyderm, "
            "or use the Local backend")


def output_folder_problem(farm: FarmSettings) -> str | None:
    """Why the output folder cannot be used as it is written, if it cannot; cheap enough to ask on every draw."""
    folder = farm.output_folder.strip()
    if not folder:
        return "no output folder: choose one in the Render Farm panel"
    if folder.startswith("//") and not bpy.data.filepath:
        return (f"output folder {folder!r} is relative to the .blend file, which is not saved yet: "
                f"save the file or choose an absolute folder")
    return None


def output_folder(farm: FarmSettings) -> Path:
    problem = output_folder_problem(farm)
    if problem:
        raise BadInput(problem)
    return Path(bpy.path.abspath(farm.output_folder.strip()))


def save_copy(stem: str) -> Path:
    """Save the current session as a copy at a stable path, so resubmitting reuses the farm's finished work.

    The path depends on the user's file (or this process, for unsaved files), and
    the farm names jobs after it; ``relative_remap`` keeps relative paths to
    external files pointing at the same files from the copy's folder.
    """
    identity = bpy.data.filepath or f"untitled-{os.getpid()}"
    folder = Path(tempfile.gettempdir()) / "pachyderm_farm" / hashlib.sha256(identity.encode()).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / f"{stem}.blend"
    try:
        bpy.ops.wm.save_as_mainfile(filepath=str(copy), copy=True, relative_remap=True, compress=False,
                                    check_existing=False)
    except RuntimeError as error:
        raise BadInput(f"could not save a copy of the scene to {copy}: {_last_line(error)}") from None
    return copy


def _last_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__
