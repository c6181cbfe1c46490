"""Render one tile of one frame to a float OpenEXR, keeping the blend loaded between tiles."""

from __future__ import annotations

import sys
from pathlib import Path

import bpy

from farm_pipelines.atomic_files import atomic_path
from farm_pipelines.blender import session
from farm_pipelines.errors import FarmFailure
from farm_pipelines.manifest import TileSpec
from farm_pipelines.tiles import border_for_box


class TileRenderer:
    """Holds one open blend; a worker reuses it for every tile of the same job."""

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        self._loaded: tuple | None = None
        self.scene: bpy.types.Scene | None = None

    def load(self, blend: Path, saved_with: tuple[int, ...] = ()) -> bpy.types.Scene:
        stat = blend.stat()
        key = (str(blend.resolve()), stat.st_mtime_ns, stat.st_size)
        if key != self._loaded:
            check_version(saved_with)
            self.scene = session.open_untrusted(blend)
            self._configure(self.scene)
            self._loaded = key
        return self.scene

    def _configure(self, scene: bpy.types.Scene) -> None:
        render = scene.render
        if self.threads > 0:
            render.threads_mode = "FIXED"
            render.threads = self.threads
        self._compositing = render.use_compositing
        render.use_persistent_data = True  # Cycles keeps the BVH between tiles
        render.use_stamp = False  # burn-in belongs on the whole frame, added by the merger
        settings = render.image_settings
        settings.file_format = "OPEN_EXR"
        settings.color_mode = "RGBA"
        settings.color_depth = "32"
        settings.exr_codec = "ZIP"

    def render(self, frame: int, tile: TileSpec, frame_size: tuple[int, int], tiles_in_frame: int,
               out_path: Path) -> None:
        scene = self.scene
        render = scene.render
        width, height = frame_size
        box = tile.render_box
        whole = box.x0 == 0 and box.y0 == 0 and box.x1 == width and box.y1 == height
        render.use_border = not whole
        render.use_crop_to_border = True
        render.border_min_x, render.border_min_y, render.border_max_x, render.border_max_y = (
            border_for_box(box, width, height))
        # Compositing a fragment is wrong (blur, glare, denoise see tile edges); the merger does it.
        render.use_compositing = self._compositing and tiles_in_frame == 1
        scene.frame_set(frame)
        with atomic_path(out_path) as tmp:
            render.filepath = str(tmp)
            bpy.ops.render.render(write_still=True, scene=scene.name)
            if not tmp.exists():
                raise FarmFailure(f"Blender wrote no image for frame {frame} tile {tile.index}")


def check_version(saved_with: tuple[int, ...]) -> None:
    """Refuse a job saved by a newer Blender: an older one may load it wrongly and silently."""
    if not saved_with:
        return
    mine, theirs = tuple(bpy.app.version[:2]), tuple(saved_with[:2])
    shown = ".".join(str(v) for v in saved_with)
    if mine < theirs:
        raise FarmFailure(f"this worker runs Blender {bpy.app.version_string}, older than the {shown} "
                          f"the scene was saved with; upgrade the worker's Blender")
    if mine > theirs:
        print(f"warning: scene saved with Blender {shown}, rendering with {bpy.app.version_string}",
              file=sys.stderr, flush=True)
