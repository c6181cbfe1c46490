"""Open other people's .blend files safely and read the facts the farm needs from them.

This and its siblings in ``farm_pipelines.blender`` are the only modules that import bpy.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy

from farm_pipelines.errors import BadInput
from farm_pipelines.tiles import Box, border_region, render_size


def open_untrusted(path: Path) -> bpy.types.Scene:
    """Load ``path`` with Python disabled and return its active scene.

    ``use_scripts=False`` so registered text blocks and Python drivers never run.
    No user add-on or startup file takes part because the farm starts every Blender
    process with ``--factory-startup`` and private user resources (``Host.scratch``).
    Never ``wm.read_factory_settings`` here: it re-syncs extension wheels against a
    state with no extension enabled, which deletes them from the user's extensions
    folder whenever that folder is shared (tests/test_real_blender.py checks it).
    """
    bpy.context.preferences.filepaths.use_scripts_auto_execute = False
    try:
        bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False, use_scripts=False)
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown error"
        raise BadInput(f"{path}: Blender cannot read it ({reason}); the file may be truncated or corrupt") from None
    scene = bpy.context.window.scene if bpy.context.window else bpy.context.scene
    if scene is None:
        raise BadInput(f"{path}: has no scene to render")
    return scene


def require_camera(scene: bpy.types.Scene, path: Path) -> None:
    if scene.camera is None:
        raise BadInput(f"{path}: scene {scene.name!r} has no active camera; set one in Scene Properties")


def frame_size(scene: bpy.types.Scene) -> tuple[int, int]:
    render = scene.render
    return render_size(render.resolution_x, render.resolution_y, render.resolution_percentage)


def render_region(scene: bpy.types.Scene) -> Box:
    """The pixels a plain render of this scene produces: the whole frame or the user's border."""
    width, height = frame_size(scene)
    render = scene.render
    if not render.use_border:
        return Box(0, 0, width, height)
    return border_region(width, height, (render.border_min_x, render.border_min_y,
                                         render.border_max_x, render.border_max_y))


def saved_with_version() -> list[int]:
    """The Blender version that last saved the loaded file."""
    return list(bpy.data.version)


def external_files() -> tuple[list[str], list[str]]:
    """``(found, missing)``: absolute paths of found external files, and the scene's own
    spelling of the missing ones. Packed data is neither: it travels inside the .blend."""
    found: set[str] = set()
    missing: set[str] = set()
    items = [*bpy.data.libraries, *bpy.data.images, *bpy.data.volumes, *bpy.data.sounds, *bpy.data.fonts,
             *bpy.data.movieclips, *bpy.data.cache_files]
    for item in items:
        absolute = external_path(item)
        if absolute is None:
            continue
        exists = not item.is_missing if isinstance(item, bpy.types.Library) else os.path.exists(absolute)
        if exists:
            found.add(absolute)
        else:
            missing.add(item.filepath)
    return sorted(found), sorted(missing)


def external_path(item: bpy.types.ID) -> str | None:
    """Where an ID's external file should be, or None if it has none (packed, generated, builtin)."""
    if getattr(item, "packed_file", None) is not None or getattr(item, "packed_files", None):
        return None
    filepath = getattr(item, "filepath", "")
    if not filepath or filepath == "<builtin>":
        return None
    if getattr(item, "source", "FILE") not in ("FILE", "SEQUENCE", "TILED", "MOVIE"):
        return None
    # Files saved on Windows spell relative paths with backslashes; Blender accepts both.
    absolute = os.path.normpath(bpy.path.abspath(filepath.replace("\\", "/"), library=item.library))
    if "<UDIM>" in absolute or "#" in os.path.basename(absolute):
        return os.path.dirname(absolute)
    return absolute
