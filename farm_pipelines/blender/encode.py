"""Encode a stitched float frame exactly as Blender encodes a whole-frame render.

The frame goes through the scene's own output path: a compositor tree holding
only an Image node, rendered with ``write_still``. With no Render Layers node
Blender skips the 3D render and writes the compositor result with the scene's
view transform, look, colour mode, bit depth, dither and stamp, so a tiled frame
and a whole-frame render are encoded by the very same code.

A frame made of several pieces is composited here, once, on the whole frame:
a copy of the scene's own compositor tree with every Render Layers node replaced
by an Image node on the stitched multilayer EXR (same view layer, passes relinked
by name), behind a Denoise node set like Cycles' denoiser if the scene denoises.
"""

from __future__ import annotations

import sys
from pathlib import Path

import bpy

from farm_pipelines.atomic_files import atomic_path
from farm_pipelines.errors import FarmFailure

#: Cycles' denoiser settings -> the compositor Denoise node's menu items.
_PREFILTER = {"NONE": "None", "FAST": "Fast", "ACCURATE": "Accurate"}
_QUALITY = {"HIGH": "High", "BALANCED": "Balanced", "FAST": "Fast"}


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
        cycles = scene.cycles
        self.denoise = render.engine == "CYCLES" and cycles.use_denoising
        self.denoiser = (cycles.denoising_input_passes, _PREFILTER[cycles.denoising_prefilter],
                         _QUALITY[cycles.denoising_quality])
        self.scene_tree = scene.compositing_node_group if render.use_compositing else None
        render.use_border = False
        render.resolution_percentage = 100
        render.use_compositing = True
        render.use_sequencer = False
        tree = bpy.data.node_groups.new("FarmEncode", "CompositorNodeTree")
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        self.image_node = tree.nodes.new("CompositorNodeImage")
        output = tree.nodes.new("NodeGroupOutput")
        tree.links.new(self.image_node.outputs["Image"], output.inputs[0])
        self.encode_tree = scene.compositing_node_group = tree

    @property
    def extension(self) -> str:
        return self.scene.render.file_extension

    def encode(self, frame: int, linear_exr: Path, size: tuple[int, int], destination: Path) -> None:
        """Write an RGBA float frame through the scene's output path, untouched by its compositor."""
        image = bpy.data.images.load(str(linear_exr), check_existing=False)
        try:
            self.image_node.image = image
            self._write(frame, size, destination)
        finally:
            self.image_node.image = None
            bpy.data.images.remove(image)

    def composite(self, frame: int, layers_exr: Path, size: tuple[int, int], destination: Path) -> None:
        """Run the scene's compositor (and denoiser) once on a stitched multilayer frame and write it."""
        image = bpy.data.images.load(str(layers_exr), check_existing=False)
        tree = self._farm_tree(image)
        try:
            self.scene.compositing_node_group = tree
            self._write(frame, size, destination)
        finally:
            self.scene.compositing_node_group = self.encode_tree
            bpy.data.node_groups.remove(tree)
            bpy.data.images.remove(image)

    def _write(self, frame: int, size: tuple[int, int], destination: Path) -> None:
        scene = self.scene
        scene.render.resolution_x, scene.render.resolution_y = size
        scene.frame_set(frame)
        with atomic_path(destination) as tmp:
            scene.render.filepath = str(tmp)
            bpy.ops.render.render(write_still=True, scene=scene.name)
            if not tmp.exists():
                raise FarmFailure(f"Blender wrote no image for frame {frame}")

    def _farm_tree(self, image: bpy.types.Image) -> bpy.types.NodeTree:
        if self.scene_tree is not None:
            tree = self.scene_tree.copy()
        else:  # what a render without compositing writes: the first rendered view layer's Combined
            tree = bpy.data.node_groups.new("FarmComposite", "CompositorNodeTree")
            tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
            layer = tree.nodes.new("CompositorNodeRLayers")
            layer.layer = next(v.name for v in self.scene.view_layers if v.use)
            tree.links.new(layer.outputs["Image"], tree.nodes.new("NodeGroupOutput").inputs[0])
        for node in [n for n in tree.nodes if n.bl_idname == "CompositorNodeRLayers"]:
            self._replace_render_layers(tree, node, image)
        return tree

    def _replace_render_layers(self, tree: bpy.types.NodeTree, node: bpy.types.Node,
                               image: bpy.types.Image) -> None:
        source = tree.nodes.new("CompositorNodeImage")
        source.image = image
        source.layer = node.layer
        noisy = combined = source.outputs["Combined"]
        view_layer = self.scene.view_layers.get(node.layer)
        if self.denoise and view_layer is not None and view_layer.cycles.use_denoising:
            combined = self._denoised(tree, source)
        for link in [link for link in tree.links if link.from_node == node]:
            name = link.from_socket.name
            output = {"Image": combined, "Noisy Image": noisy}.get(name) or source.outputs.get(name)
            if output is None:
                raise FarmFailure(f"the compositor reads pass {name!r} of view layer {node.layer!r}, "
                                  f"which the rendered tiles do not have")
            tree.links.new(output, link.to_socket)
        tree.nodes.remove(node)

    def _denoised(self, tree: bpy.types.NodeTree, source: bpy.types.Node) -> bpy.types.NodeSocket:
        """A Denoise node fed like Cycles' own denoiser: noisy combined, albedo and normal as asked."""
        passes, prefilter, quality = self.denoiser
        denoise = tree.nodes.new("CompositorNodeDenoise")
        tree.links.new(source.outputs["Combined"], denoise.inputs["Image"])
        if passes in ("RGB_ALBEDO", "RGB_ALBEDO_NORMAL"):
            tree.links.new(source.outputs["Denoising Albedo"], denoise.inputs["Albedo"])
        if passes == "RGB_ALBEDO_NORMAL":
            tree.links.new(source.outputs["Denoising Normal"], denoise.inputs["Normal"])
        denoise.inputs["Prefilter"].default_value = prefilter
        denoise.inputs["Quality"].default_value = quality
        return denoise.outputs["Image"]
