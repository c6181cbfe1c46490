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
        opened = bpy.data.filepath and os.path.samefile(bpy.data.filepath, path)
        if not opened:  # else the scene opened and a library did not: the trace names that one missing
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


#: The data-blocks whose ``filepath`` names an external file.
_FILE_COLLECTIONS = ("libraries", "images", "volumes", "sounds", "fonts", "movieclips", "cache_files")


def use_forward_slashes() -> None:
    """Relative paths saved on Windows spell folders with backslashes; spell them with ``/`` here.

    Only relative paths (``//..\\textures\\wood.png``): those name a file beside the blend on
    any machine. A Windows absolute path stays as it is and is reported missing elsewhere.
    """
    if os.name == "nt":
        return
    for collection in _FILE_COLLECTIONS:
        for item in getattr(bpy.data, collection):
            path = getattr(item, "filepath", "")
            if path.startswith("//") and "\\" in path and item.library is None:
                item.filepath = path.replace("\\", "/")
                if isinstance(item, bpy.types.Library):
                    item.reload()


def absolute_cache_folders() -> None:
    """Spell the folders of node bakes and fluid caches absolute before the copy is saved elsewhere.

    Saving with ``relative_remap`` rebases the paths Blender's path walker knows (images, libraries,
    volumes, cache files); these folders it leaves as they are, so a ``//bake`` would name a folder
    beside the copy. The trace then carries them into the job folder with relative paths again.
    """
    for obj in bpy.data.objects:
        if obj.library is not None:
            continue  # read from its library file, which is not moved
        for modifier in obj.modifiers:
            if modifier.type == "NODES":
                modifier.bake_directory = _absolute(modifier.bake_directory)
                for bake in modifier.bakes:
                    bake.directory = _absolute(bake.directory)
            elif modifier.type == "FLUID" and modifier.domain_settings is not None:
                modifier.domain_settings.cache_directory = _absolute(modifier.domain_settings.cache_directory)
        for system in obj.particle_systems:
            _external_point_cache(system.point_cache, obj)
        for modifier in obj.modifiers:
            if getattr(modifier, "point_cache", None) is not None:  # cloth, soft body
                _external_point_cache(modifier.point_cache, obj)


def _external_point_cache(cache: bpy.types.PointCache, owner: bpy.types.ID) -> None:
    """A disk cache lives in ``//blendcache_<blend name>/``, named after the blend, which the copy is
    not: make it an external cache in that folder under the same file names (Blender names them by
    the cache's name, else by its owner's name in hex; ``ptcache_filepath``). An unbaked disk cache
    has no files to carry: the copy keeps it in memory, and the farm simulates it as Blender would."""
    if not cache.use_disk_cache or cache.use_external or not bpy.data.filepath:
        return
    if not cache.is_baked:
        cache.use_disk_cache = False
        return
    stem = Path(bpy.data.filepath).stem
    cache.name = cache.name or owner.name.encode().hex().upper()
    cache.filepath = bpy.path.abspath(f"//blendcache_{stem}/")
    cache.use_external = True


def _absolute(path: str) -> str:
    """The absolute folder, with room to spare: the job folder's ``//files/<key>/<name>`` is written
    over this string in place (``dependencies``), so it must be at least that long. A folder that
    holds the scene's own (``//``, its parents, ``/``) stays as it is, and the copy's trace refuses it."""
    if not path:
        return path
    folder = Path(os.path.realpath(bpy.path.abspath(path)))
    if Path(os.path.realpath(bpy.path.abspath("//"))).is_relative_to(folder):
        return path
    return str(folder) + "/" * 32


def users_of_files() -> dict[str, str]:
    """Each file-using data-block's users, keyed as BAT names blocks (``"IMWood"``):
    ``image "Wood" of material "Table"``, so that a missing file names what needs it."""
    items = [item for collection in _FILE_COLLECTIONS for item in getattr(bpy.data, collection)]
    users = bpy.data.user_map(subset=items)
    named: dict[str, str] = {}
    for item in items:
        own = f'{_kind(item)} "{item.name}"'
        holders = sorted(f'{_kind(user)} "{user.name}"' for user in users.get(item, ()) if user is not item)
        named[_block_name(item)] = f"{own} of {', '.join(holders)}" if holders else own
    for obj in bpy.data.objects:
        for index, modifier in enumerate(obj.modifiers):
            key = f"OB{obj.name}.modifiers[{index}]"
            named[key] = f'modifier "{modifier.name}" of object "{obj.name}"'
            for bake in range(len(getattr(modifier, "bakes", ()))):
                named[f"{key}.bakes[{bake}]"] = f'bake {bake} of modifier "{modifier.name}" of object "{obj.name}"'
    return named


_CODES = {"Library": "LI", "Image": "IM", "Volume": "VO", "Sound": "SO", "VectorFont": "VF",
          "MovieClip": "MC", "CacheFile": "CF"}


def _block_name(item: bpy.types.ID) -> str:
    return _CODES.get(type(item).__name__, "ID") + item.name


def _kind(item: bpy.types.ID) -> str:
    kind = getattr(item, "id_type", type(item).__name__).lower().replace("_", " ")
    return {"nodetree": "node group", "cachefile": "cache file", "movieclip": "movie clip",
            "vectorfont": "font", "font": "font"}.get(kind, kind)


def movie_output(scene: bpy.types.Scene, file_format: str | None) -> dict | None:
    """What a scene that writes a movie asks for, or None: the farm renders it as image frames
    (``file_format``, else PNG) and encodes the movie from them (``farm_pipelines.movie``)."""
    render = scene.render
    if not render.is_movie_format:
        return None
    ffmpeg = render.ffmpeg
    return {"file_format": render.image_settings.file_format, "container": ffmpeg.format, "codec": ffmpeg.codec,
            "crf": ffmpeg.constant_rate_factor, "fps": render.fps, "fps_base": render.fps_base,
            "frames_format": file_format or "PNG"}
