"""Per-scene farm settings (``scene.render_farm``) and the running job's state (``window_manager.render_farm_job``).

Settings live on the scene so they are saved with it; job state lives on the
window manager, one job per Blender session, and is what the panel draws.
"""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)
from bpy.types import PropertyGroup

from . import images

#: Tile presets: identifier -> edge in pixels (None: one tile per frame); "AUTO" is chosen at submission.
TILE_PRESETS: dict[str, int | None] = {
    "CPU_16": 16,
    "CPU_32": 32,
    "CPU_64": 64,
    "GPU_256": 256,
    "GPU_512": 512,
    "WHOLE": None,
}
TILE_PRESET_ITEMS = [
    ("AUTO", "Auto", "Chosen when the job is submitted, from the frame size, frame count and number of workers"),
    ("CPU_16", "CPU 16 px", "16x16 pixel tiles; small tiles balance CPU workers well"),
    ("CPU_32", "CPU 32 px", "32x32 pixel tiles"),
    ("CPU_64", "CPU 64 px", "64x64 pixel tiles"),
    ("GPU_256", "GPU 256 px", "256x256 pixel tiles: GPUs need large tiles to be busy. A scene renders "
                               "on GPUs when its Render Properties say Device: GPU Compute"),
    ("GPU_512", "GPU 512 px", "512x512 pixel tiles, for GPU workers"),
    ("WHOLE", "Whole Frame", "One tile per frame; frames are spread over the workers"),
]
SCENE_TILE_ITEMS = [
    ("PREFERENCES", "Preferences Default", "The default tile size from the add-on preferences"),
    *TILE_PRESET_ITEMS,
    ("CUSTOM", "Custom", "Tiles of the width and height given below"),
]

JOB_STATES = [
    ("IDLE", "Idle", "No job submitted in this session"),
    ("RUNNING", "Running", "The farm is rendering"),
    ("FINISHED", "Finished", "Every frame is done"),
    ("FAILED", "Failed", "The job stopped with an error"),
    ("CANCELLED", "Cancelled", "The job was cancelled"),
]


class FarmSettings(PropertyGroup):
    __slots__ = ()

    backend: EnumProperty(
        name="Backend",
        items=[
            ("LOCAL", "Local", "Render on this computer with the embedded local farm"),
            ("PACHYDERM", "Pachyderm", "Render on the Pachyderm cluster set in the add-on preferences"),
        ],
        default="LOCAL",
    )
    tile_size: EnumProperty(name="Tile Size", items=SCENE_TILE_ITEMS, default="PREFERENCES")
    tile_width: IntProperty(name="Tile Width", default=128, min=8, max=16384, subtype="PIXEL")
    tile_height: IntProperty(name="Tile Height", default=128, min=8, max=16384, subtype="PIXEL")
    use_scene_frames: BoolProperty(
        name="Scene Frame Range", default=True, description="Render the scene's frame range")
    frame_start: IntProperty(name="Start", default=1)
    frame_end: IntProperty(name="End", default=250)
    frame_step: IntProperty(name="Step", default=1, min=1)
    file_format: EnumProperty(
        name="Format",
        items=[("PNG", "PNG", "Display-referred 8/16-bit PNG frames, as the scene's colour management makes them"),
               ("OPEN_EXR", "OpenEXR", "Scene-linear float OpenEXR frames")],
        default="PNG",
    )
    # Blender draws a path red when it starts with '//' and the property does not say it supports that;
    # the farm resolves '//' against the saved .blend file (submit.output_folder).
    output_folder: StringProperty(
        name="Output Folder", subtype="DIR_PATH", default="//render_farm/",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
        description="Where finished frames are kept; '//' is the folder of the .blend file")
    overscan: IntProperty(
        name="Overscan", default=0, min=0, soft_max=64, max=4096, subtype="PIXEL",
        description="Extra pixels rendered around each tile and cropped when the frame is stitched, "
                    "for effects that reach across tile borders")
    sample_chunks: IntProperty(
        name="Sample Chunks", default=1, min=1, soft_max=16, max=1024,
        description="Split each frame's samples over this many workers too, for frames with few tiles "
                    "(Cycles only; adaptive sampling is turned off)")
    strict: BoolProperty(
        name="Strict", default=False,
        description="Refuse the job if the scene refers to missing files, instead of rendering without them")


class FarmFrame(PropertyGroup):
    __slots__ = ()

    frame: IntProperty(name="Frame")
    filepath: StringProperty(name="File", subtype="FILE_PATH")
    image: StringProperty(name="Image", description="Name of the frame in bpy.data.images")


def _show_active_frame(job: FarmJobState, context: bpy.types.Context) -> None:
    """Picking a finished frame shows it: a still in the Image Editor, a frame of a sequence by moving
    the playhead to it (the artist asked to see that frame, and the editor follows the playhead)."""
    if not 0 <= job.active_frame < len(job.frames):
        return
    item = job.frames[job.active_frame]
    image = bpy.data.images.get(item.image)
    if image is None:
        return
    if image.source != "SEQUENCE":
        images.show(context, image)
        return
    frames = [entry.frame for entry in job.frames]
    context.scene.frame_current = item.frame
    images.show(context, image, span=(min(frames), max(frames)))


class FarmJobState(PropertyGroup):
    __slots__ = ()

    state: EnumProperty(name="State", items=JOB_STATES, default="IDLE")
    job_name: StringProperty(name="Job", description="What the farm calls the job")
    message: StringProperty(name="Message", description="The job's outcome or its error")
    warnings: StringProperty(name="Warnings", description="Warnings from the farm, one a line")
    fraction: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")
    tiles_done: IntProperty(name="Tiles Done")
    tiles_total: IntProperty(name="Tiles")
    frames_merged: IntProperty(name="Frames Merged")
    frames_total: IntProperty(name="Frames")
    eta_seconds: FloatProperty(name="ETA", default=-1.0, description="Seconds left, or -1 when unknown")
    frames: CollectionProperty(type=FarmFrame)
    active_frame: IntProperty(name="Frame", default=-1, update=_show_active_frame)

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"


_CLASSES = (FarmSettings, FarmFrame, FarmJobState)


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.render_farm = PointerProperty(type=FarmSettings)
    bpy.types.WindowManager.render_farm_job = PointerProperty(type=FarmJobState)


def unregister() -> None:
    del bpy.types.WindowManager.render_farm_job
    del bpy.types.Scene.render_farm
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
