"""Make a self-contained copy of a scene for the farm, and check it can be rendered.

Run as ``python -m farm_pipelines.blender.prepare SRC DST SETTINGS_JSON RESULT_JSON``:
the source is opened untrusted and checked, and a copy saved at DST, its relative
paths remapped to DST's folder; the facts the submitter needs go to RESULT_JSON.
Nothing is packed here: ``farm_pipelines.dependencies`` traces the copy with BAT and
carries every file it needs into the job folder, each content stored once.
"""

from __future__ import annotations

import errno
import json
import shutil
import sys
from pathlib import Path

import bpy

from farm_pipelines import blender_versions, dependencies
from farm_pipelines.atomic_files import atomic_path, write_text
from farm_pipelines.blender import devices, entry, session
from farm_pipelines.blender.compositor import compositor_for
from farm_pipelines.errors import BadInput, FarmFailure
from farm_pipelines.job import JobSettings, frames_outside


def prepare(source: Path, destination: Path, settings: JobSettings) -> dict:
    if pipes := dependencies.libraries_that_are_not_files(source):
        raise BadInput(f"{source}: its library {pipes[0]} is not a regular file (a pipe or a device); "
                       "put the .blend itself there")
    scene = session.open_untrusted(source)
    saved_with = session.saved_with_version()
    # The copy is saved by this Blender, and the local farm's workers are this Blender too.
    blender_versions.require_readable(
        f"{source}: saved by", saved_with, bpy.app.version, "prepares the job here and renders it on the local farm",
        f"render it from Blender {blender_versions.shown(saved_with[:2])} or newer, "
        f"or save it again from Blender {blender_versions.shown(bpy.app.version[:2])}")
    session.require_camera(scene, source)
    frames = settings.frames.frames(scene.frame_start, scene.frame_end, scene.frame_step)
    if not frames:
        raise BadInput(f"{source}: the frame range is empty; check --frames or the scene's frame range")
    outside = frames_outside(frames, scene.frame_start, scene.frame_end)  # refuses a typo's million frames
    if scene.render.use_multiview:
        raise BadInput(f"{source}: scene {scene.name!r} renders stereo or multi-view, which the farm does not "
                       "(it renders one view); turn off Stereoscopy in Output Properties")
    if settings.file_format is None and _composites_denoised_layers(scene):
        raise BadInput(f"{source}: scene {scene.name!r} writes multilayer EXR with Cycles' denoiser on and its "
                       "compositor or several view layers, and the farm cannot yet write the denoised view layers "
                       "that Blender writes; turn off Denoise in Render Properties (a Denoise node in the "
                       "compositor works), or choose --format exr or png")
    if settings.sample_chunks > 1 and scene.render.engine != "CYCLES":
        raise BadInput(f"{source}: --sample-chunks needs Cycles; scene {scene.name!r} renders with "
                       f"{scene.render.engine}")
    session.use_forward_slashes()
    session.absolute_cache_folders()
    users = session.users_of_files()
    _save_copy(source, destination)
    return {
        "frames": frames,
        "scene_start": scene.frame_start,  # where the parts' grid starts (job_parts)
        "frame_size": list(session.frame_size(scene)),
        "region": session.render_region(scene).as_list(),
        "users": users,
        "saved_with": saved_with,
        "gpu": devices.asks_for_gpu(scene),  # --tile auto then counts GPU workers as fast ones
        "movie": session.movie_output(scene, settings.file_format),
        "outside": outside,  # frames beyond the scene's range, said as a warning
    }


def _composites_denoised_layers(scene: bpy.types.Scene) -> bool:
    """A multilayer EXR of a Cycles-denoised render holds each view layer's denoised Combined; the farm
    denoises inside its compositor tree, whose one result is the composite, or the first layer's Combined
    when the scene does not composite."""
    render = scene.render
    layers = [layer for layer in scene.view_layers if layer.use]
    composites = render.use_compositing and compositor_for(scene).user_tree() is not None
    return (render.image_settings.file_format == "OPEN_EXR_MULTILAYER" and render.engine == "CYCLES"
            and scene.cycles.use_denoising and any(layer.cycles.use_denoising for layer in layers)
            and (composites or len(layers) > 1))


def _save_copy(source: Path, destination: Path) -> None:
    """Save the job's copy; a full disk is named as such.

    Blender writes ``<name>@`` and renames it: when the write runs out of space it reports
    only that the rename found no file. So a failed save asks whether the disk has room
    for as many bytes as the source takes; if not, that is why.
    """
    try:
        with atomic_path(destination) as tmp:
            bpy.ops.wm.save_as_mainfile(filepath=str(tmp), copy=True, compress=False, relative_remap=True)
    except RuntimeError:
        if shutil.disk_usage(destination.parent).free >= source.stat().st_size:
            raise
        raise FarmFailure(_disk_full(destination.parent)) from None


def _disk_full(folder: Path) -> str:
    return f"disk full while saving the job's copy of the scene in {folder}; free some space and run again"


def main() -> None:
    source, destination, settings_json, result_json = sys.argv[-4:]
    settings = JobSettings.from_json(json.loads(settings_json))
    try:
        result = prepare(Path(source), Path(destination), settings)
        write_text(Path(result_json), json.dumps(result))
    except OSError as error:  # the result, or Blender's own writes
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise FarmFailure(_disk_full(Path(destination).parent)) from None


if __name__ == "__main__":
    entry.run(main)
