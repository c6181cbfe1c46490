"""Encode a stitched float frame exactly as Blender encodes a whole-frame render.

The frame goes through the scene's own output path: a compositor tree holding
only an Image node, rendered with ``write_still``. With no Render Layers node
Blender skips the 3D render and writes the compositor result with the scene's
view transform, look, colour mode, bit depth, dither and stamp, so a tiled frame
and a whole-frame render are encoded by the very same code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import bpy

from farm_pipelines.atomic_files import atomic_path
from farm_pipelines.errors import FarmFailure


class FrameEncoder:
    def __init__(self, scene: bpy.types.Scene, file_format: str | None = None) -> None:
        self.scene = scene
        render = scene.render
        if file_format:
            render.image_settings.file_format = file_format
        elif render.is_movie_format:
            print(f"warning: scene {scene.name!r} writes a movie; the farm writes PNG frames instead",
                  file=sys.stderr, flush=True)
            render.image_settings.file_format = "PNG"
        render.use_border = False
        render.resolution_percentage = 100
        render.use_compositing = True
        render.use_sequencer = False
        tree = bpy.data.node_groups.new("FarmEncode", "CompositorNodeTree")
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        self.image_node = tree.nodes.new("CompositorNodeImage")
        output = tree.nodes.new("NodeGroupOutput")
        tree.links.new(self.image_node.outputs["Image"], output.inputs[0])
        scene.compositing_node_group = tree

    @property
    def extension(self) -> str:
        return self.scene.render.file_extension

    def encode(self, frame: int, linear_exr: Path, size: tuple[int, int], destination: Path) -> None:
        scene = self.scene
        scene.render.resolution_x, scene.render.resolution_y = size
        scene.frame_set(frame)
        image = bpy.data.images.load(str(linear_exr), check_existing=False)
        try:
            self.image_node.image = image
            with atomic_path(destination) as tmp:
                scene.render.filepath = str(tmp)
                bpy.ops.render.render(write_still=True, scene=scene.name)
                if not tmp.exists():
                    raise FarmFailure(f"Blender wrote no image for frame {frame}")
        finally:
            self.image_node.image = None
            bpy.data.images.remove(image)
