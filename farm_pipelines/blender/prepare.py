"""Make a self-contained copy of a scene for the farm, and check it can be rendered.

Run as ``python -m farm_pipelines.blender.prepare SRC DST SETTINGS_JSON RESULT_JSON``:
the source is opened untrusted, every referenced image, HDR and linked library is
packed into the copy, and the facts the submitter needs go to RESULT_JSON.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import bpy

from farm_pipelines import blender_versions
from farm_pipelines.atomic_files import atomic_path, write_text
from farm_pipelines.blender import entry, session
from farm_pipelines.errors import BadInput
from farm_pipelines.job import JobSettings


def prepare(source: Path, destination: Path, settings: JobSettings) -> dict:
    scene = session.open_untrusted(source)
    saved_with = session.saved_with_version()
    # The copy is saved by this Blender, and the local farm's workers are this Blender too.
    blender_versions.require_readable(
        f"{source}: saved by", saved_with, bpy.app.version, "prepares the job here and renders it on the local farm",
        f"render it from Blender {blender_versions.shown(saved_with[:2])} or newer, "
        f"or save it again from Blender {blender_versions.shown(bpy.app.version[:2])}")
    session.require_camera(scene, source)
    frames = settings.frames.frames(scene.frame_start, scene.frame_end)
    if not frames:
        raise BadInput(f"{source}: the frame range is empty; check --frames or the scene's frame range")
    if settings.sample_chunks > 1 and scene.render.engine != "CYCLES":
        raise BadInput(f"{source}: --sample-chunks needs Cycles; scene {scene.name!r} renders with "
                       f"{scene.render.engine}")
    found, missing = session.external_files()
    if missing and settings.strict:
        raise BadInput(f"{source}: missing files: {', '.join(missing)} (drop --strict to render without them)")
    pack_found_files()
    unpacked, _ = session.external_files()  # sequences, movies, caches, libraries beside a missing one
    with atomic_path(destination) as tmp:
        bpy.ops.wm.save_as_mainfile(filepath=str(tmp), copy=True, compress=False)
    return {
        "frames": frames,
        "frame_size": list(session.frame_size(scene)),
        "region": session.render_region(scene).as_list(),
        "missing": missing,
        "unpacked": unpacked,
        "dependencies": found,
        "saved_with": saved_with,
    }


def pack_found_files() -> None:
    """Pack every external file that exists; missing ones were already reported and stay missing."""
    for item in [*bpy.data.images, *bpy.data.sounds, *bpy.data.fonts]:
        path = session.external_path(item)
        if path and os.path.isfile(path) and getattr(item, "source", "FILE") in ("FILE", "TILED") \
                and item.library is None:
            item.pack()
    if bpy.data.libraries and not any(library.is_missing for library in bpy.data.libraries):
        bpy.ops.file.pack_libraries()


def main() -> None:
    source, destination, settings_json, result_json = sys.argv[-4:]
    settings = JobSettings.from_json(json.loads(settings_json))
    result = prepare(Path(source), Path(destination), settings)
    write_text(Path(result_json), json.dumps(result))


if __name__ == "__main__":
    entry.run(main)
