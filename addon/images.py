"""Finished frames in Blender: a job's frames as one growing image sequence, scrubbed with the timeline.

Frames arrive one by one while the job runs (``<out>/<frame:06d>.<ext>``). An
animation becomes one Image data-block per output folder with source SEQUENCE,
as Blender's own Open Image makes of a numbered file: each Image Editor showing
it reads file number ``clamp(scene frame - frame_start + 1, 0, frame_duration) +
frame_offset`` of its image user, refreshed on every frame change
(``use_auto_refresh``). Here ``frame_start`` is the first delivered frame,
``frame_offset`` is one less, and ``frame_duration`` spans up to the last one,
so the editor shows frame N at scene frame N, and past the last delivered frame
it holds that one: parked at or after the end, the playhead shows each frame as
it lands; before the first it shows no image, as any sequence in Blender does.
Deliveries never move the playhead (that would re-evaluate the artist's scene
under them); picking a frame in the panel's list does, as the artist asked.

Blender caches what it read for each frame, a missing file included, so every
delivery reloads the image: a new frame is read, and one rendered again shows its
new pixels. A still (a job of one frame) stays a single image, as Blender's own
render of one frame is.
"""

from __future__ import annotations

from pathlib import Path

import bpy

#: Custom property on a job's sequence image: the folder whose frames it shows, so a rerun reuses it.
OUTPUT_FOLDER = "render_farm_output"


def deliver(context: bpy.types.Context, name: str, frame: int, path: Path, delivered: list[int],
            expected: int) -> bpy.types.Image:
    """Load ``path`` (frame ``frame`` of job ``name``) into Blender and show it.

    ``delivered`` lists the frames this run has delivered, this one included, and
    ``expected`` how many the job has (0 while not known). The first delivery of a
    run takes every unpinned Image Editor; later ones update the editors still
    showing the sequence, so an editor the artist turned to another image keeps it.
    """
    claim = len(delivered) == 1
    if expected <= 1 and delivered == [frame]:
        image = load_still(path)
        show(context, image)
        return image
    image = _sequence(name, path)
    image.reload()  # drops every cached frame, and a cached miss of the frame that just landed
    show(context, image, span=(min(delivered), max(delivered)), claim=claim)
    return image


def load_still(path: Path) -> bpy.types.Image:
    """The single image of ``path``, reloaded so a re-rendered frame replaces the old pixels.

    Not ``load(check_existing=True)``: that would return a sequence whose first file is ``path``.
    """
    for image in bpy.data.images:
        if image.source == "FILE" and image.library is None and Path(bpy.path.abspath(image.filepath)) == path:
            image.reload()
            return image
    return bpy.data.images.load(str(path), check_existing=False)


def _sequence(name: str, path: Path) -> bpy.types.Image:
    """The sequence image of ``path``'s folder: the one an earlier delivery (or run) made, or a new one."""
    folder = str(path.parent)
    for image in bpy.data.images:
        if image.get(OUTPUT_FOLDER) == folder and image.source == "SEQUENCE" and image.library is None:
            if Path(bpy.path.abspath(image.filepath)).suffix != path.suffix:  # the job's format changed
                image.filepath = str(path)
            return image
    image = bpy.data.images.load(str(path), check_existing=False)
    image.source = "SEQUENCE"
    image.name = name
    image[OUTPUT_FOLDER] = folder
    return image


def show(context: bpy.types.Context, image: bpy.types.Image, span: tuple[int, int] | None = None,
         claim: bool = True) -> None:
    """Show ``image`` in every open Image Editor whose image is not pinned (with ``claim``), or only in
    those already showing it; a sequence's editors follow the scene's frame over frames ``span``."""
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type != "IMAGE_EDITOR":
                continue
            space = area.spaces.active
            if space.image != image:
                if space.use_image_pin or not claim:
                    continue
                space.image = image
            if span is not None:
                first, last = span
                user = space.image_user
                user.use_auto_refresh, user.use_cyclic = True, False
                user.frame_start, user.frame_offset, user.frame_duration = first, first - 1, last - first + 1
                # What Blender computes on the next frame change (BKE_image_user_frame_get), now: a
                # background Blender never redraws, and the UI should not wait for the playhead to move.
                user.frame_current = min(max(context.scene.frame_current - first + 1, 0), last - first + 1) + first - 1
            area.tag_redraw()
