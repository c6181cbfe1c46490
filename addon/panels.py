"""The Render Farm panel, right under Render Engine in Render Properties, and the list of finished frames.

Drawing runs many times a second while the mouse moves: it reads settings and the
job's state and cached checks only, never imports the farm's heavy packages nor
touches the disk.
"""

from __future__ import annotations

import bpy
from bpy.types import Panel, UIList

from . import dependencies, preferences, submit
from .properties import FarmFrame, FarmJobState, FarmSettings


class FARM_UL_frames(UIList):  # noqa: N801  (Blender's list naming)
    """Finished frames; selecting one shows it in the Image Editor (a sequence's frame by taking the
    playhead to it)."""

    def draw_item(self, context, layout, data, item: FarmFrame, icon, active_data, active_propname, index=0):
        row = layout.row()
        row.label(text=f"Frame {item.frame}", icon="IMAGE_DATA")
        row.label(text=bpy.path.basename(item.filepath))


class RENDER_PT_farm(Panel):  # noqa: N801
    bl_label = "Render Farm"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"
    # Blender clamps bl_order at 0 and breaks ties by registration order, so an add-on's panel always
    # came after Cycles' dozen. As a sub-panel of the header-less panel that holds Render Engine (and
    # Cycles' Device), it is drawn right under them, before Sampling, and folds like any panel.
    bl_parent_id = "RENDER_PT_context"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        missing = dependencies.missing(context.scene.render_farm.backend)
        if missing:
            box = layout.box()
            box.alert = True
            box.label(text=dependencies.message(missing), icon="ERROR")
        job: FarmJobState = context.window_manager.render_farm_job
        draw_settings(context, layout.column(), enabled=not job.running)
        draw_job(layout, job)


def draw_settings(context: bpy.types.Context, col: bpy.types.UILayout, enabled: bool) -> None:
    """The job's settings; the scene's own render region is shown, not copied, since the farm honours it."""
    scene = context.scene
    farm: FarmSettings = scene.render_farm
    col.enabled = enabled
    col.prop(farm, "backend")
    if farm.backend == "PACHYDERM":
        col.label(text=f"Cluster: {preferences.get(context).address or 'the active pachctl context'}")
    col.prop(farm, "tile_size")
    if farm.tile_size == "CUSTOM":
        sub = col.column(align=True)
        sub.prop(farm, "tile_width", text="Width")
        sub.prop(farm, "tile_height", text="Height")
    elif farm.tile_size == "AUTO":
        col.label(text="Tile size is chosen when the job is submitted", icon="INFO")
    col.prop(farm, "overscan")
    sub = col.column()
    sub.active = scene.render.engine == "CYCLES"
    sub.prop(farm, "sample_chunks")
    col.prop(scene.render, "use_border", text="Render Region")
    sub = col.column()
    sub.active = scene.render.use_border
    sub.prop(scene.render, "use_crop_to_border", text="Crop to Region")
    col.prop(farm, "use_scene_frames")
    frames = col.column(align=True)
    if not farm.use_scene_frames:  # the scene's range comes with the scene's own step, as Blender renders it
        frames.prop(farm, "frame_start")
        frames.prop(farm, "frame_end")
        frames.prop(farm, "frame_step")
    col.prop(farm, "file_format")
    folder = col.column()
    folder.alert = submit.output_folder_problem(farm) is not None
    folder.prop(farm, "output_folder")
    col.prop(farm, "strict")


def draw_job(layout: bpy.types.UILayout, job: FarmJobState) -> None:
    """Render button or progress and Cancel, then the outcome, warnings and finished frames."""
    if job.running:
        row = layout.row(align=True)
        row.progress(factor=job.fraction, type="BAR", text=progress_text(job))
        row.operator("farm.cancel_job", text="", icon="CANCEL")
    else:
        layout.operator("farm.render_to_farm", icon="RENDER_ANIMATION")
    if job.message:
        box = layout.box()
        box.alert = job.state == "FAILED"
        box.label(text=job.message, icon="ERROR" if job.state == "FAILED" else "INFO")
    for warning in filter(None, job.warnings.splitlines()):
        layout.label(text=warning, icon="ERROR")
    if len(job.frames):
        layout.label(text=f"Finished frames of {job.job_name}:")
        layout.template_list("FARM_UL_frames", "", job, "frames", job, "active_frame", rows=3)


def progress_text(job: FarmJobState) -> str:
    """``3/10 frames, 2:05 left`` for the bar: frames are what an artist waits for, and the farm's ETA
    runs through the merge of the last one. Before the first frame is known, the tiles say it moves."""
    if job.frames_total:
        text = f"{job.frames_merged}/{job.frames_total} frames"
    else:
        text = f"{job.tiles_done}/{job.tiles_total} tiles" if job.tiles_total else "Starting"
    if job.eta_seconds >= 0:
        text += f", {clock(job.eta_seconds)} left"
    return text


def clock(seconds: float) -> str:
    """``2:05``, or ``1:02:05`` from an hour on."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


register, unregister = bpy.utils.register_classes_factory((FARM_UL_frames, RENDER_PT_farm))
