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

from pathlib import Path

import bpy
import numpy as np

from farm_pipelines import merge
from farm_pipelines.atomic_files import atomic_path
from farm_pipelines.blender.compositor import compositor_for, mute_file_outputs
from farm_pipelines.errors import FarmFailure

#: Cycles' denoiser settings -> the compositor Denoise node's menu items.
_PREFILTER = {"NONE": "None", "FAST": "Fast", "ACCURATE": "Accurate"}
_QUALITY = {"HIGH": "High", "BALANCED": "Balanced", "FAST": "Fast"}


def set_file_format(settings: bpy.types.ImageFormatSettings, file_format: str) -> None:
    """Blender 5.0 takes the media type first (a VIDEO scene accepts only FFMPEG as its file format)."""
    if hasattr(settings, "media_type"):
        settings.media_type = "MULTI_LAYER_IMAGE" if file_format == "OPEN_EXR_MULTILAYER" else "IMAGE"
    settings.file_format = file_format


class FrameEncoder:
    def __init__(self, scene: bpy.types.Scene, file_format: str | None = None) -> None:
        self.scene = scene
        render = scene.render
        if file_format or render.is_movie_format:  # a movie is written as frames (prepare's "movie" fact)
            set_file_format(render.image_settings, file_format or "PNG")
        cycles = scene.cycles
        self.denoise = render.engine == "CYCLES" and cycles.use_denoising
        self.denoiser = (cycles.denoising_input_passes, cycles.denoising_prefilter, cycles.denoising_quality)
        mute_file_outputs(scene)  # never writing where a scene from someone else points (the renderer says so)
        self.compositor = compositor_for(scene)
        self.scene_tree = self.compositor.user_tree() if render.use_compositing else None
        render.use_border = False
        render.resolution_percentage = 100
        render.use_compositing = True
        render.use_sequencer = False
        self._first_layer = next((v.name for v in scene.view_layers if v.use), "")
        self._passes_exr: Path | None = None  # the stitched passes of the frame being written
        # Each tree is built on first use and kept: only its image is re-read for the next frame.
        self._trees: dict[str, bpy.types.NodeTree] = {}
        self._images: dict[str, bpy.types.Image] = {}

    @property
    def extension(self) -> str:
        return self.scene.render.file_extension

    def encode(self, frame: int, linear_exr: Path, size: tuple[int, int], destination: Path) -> None:
        """Write an RGBA float frame through the scene's output path, untouched by its compositor."""
        image = self._image("linear", linear_exr)
        self._passes_exr = None  # a whole frame travels as RGBA: only its Combined is known
        if "encode" not in self._trees:
            tree, output = self.compositor.new_tree("FarmEncode")
            node = tree.nodes.new("CompositorNodeImage")
            node.image = image
            tree.links.new(node.outputs["Image"], output)
            self._trees["encode"] = tree
        self.compositor.show(self._trees["encode"])
        self._write(frame, size, destination)

    def composite(self, frame: int, layers_exr: Path, size: tuple[int, int], destination: Path) -> None:
        """Run the scene's compositor (and denoiser) once on a stitched multilayer frame and write it."""
        image = self._image("layers", layers_exr)
        self._passes_exr = layers_exr
        if "farm" not in self._trees:
            self._trees["farm"] = self._farm_tree(image)
        self.compositor.show(self._trees["farm"])
        self._write(frame, size, destination)

    def _image(self, kind: str, path: Path) -> bpy.types.Image:
        """The image datablock for this kind of input, now reading ``path``: the nodes using it stay linked."""
        image = self._images.get(kind)
        if image is None:
            image = self._images[kind] = bpy.data.images.load(str(path), check_existing=False)
        else:
            image.filepath = str(path)
            image.reload()
        return image

    def _write(self, frame: int, size: tuple[int, int], destination: Path) -> None:
        scene = self.scene
        scene.render.resolution_x, scene.render.resolution_y = size
        scene.frame_set(frame)
        with atomic_path(destination) as tmp:
            scene.render.filepath = str(tmp)
            bpy.ops.render.render(write_still=True, scene=scene.name)
            if not tmp.exists():
                raise FarmFailure(f"Blender wrote no image for frame {frame}")
            if scene.render.image_settings.file_format == "OPEN_EXR_MULTILAYER":
                merge.as_plain_multilayer(tmp, self._rendered_passes(frame),
                                          None if self.scene_tree is not None else self._first_layer)

    def _rendered_passes(self, frame: int) -> dict[str, np.ndarray]:
        """The channels a plain render writes for the scene's view layers: the stitched pieces' (less the
        denoising data the renderer stored for the farm's denoiser, plus the undenoised Combined as Cycles'
        Noisy Image); a whole frame has only its Combined."""
        if self._passes_exr is None:
            if self.scene_tree is not None or self.denoise or _renders_more_than_combined(self.scene):
                raise FarmFailure(f"frame {frame}: the scene writes its passes or composite to a multilayer EXR, "
                                  "which a whole-frame render does not carry to the farm's merge; render it "
                                  "in tiles smaller than the frame (--tile)")
            return {}
        channels = merge.read_layers(self._passes_exr) or {}
        farm_only = [f"{layer.name}.Denoising " for layer in self.scene.view_layers
                     if not layer.cycles.denoising_store_passes]
        passes = {name: pixels for name, pixels in channels.items() if not name.startswith(tuple(farm_only))}
        for layer in self.scene.view_layers:  # Cycles keeps what it denoised as the layer's Noisy Image
            if self.denoise and layer.use and layer.cycles.use_denoising:
                prefix = f"{layer.name}.Combined."
                passes.update({f"{layer.name}.Noisy Image.{name[len(prefix):]}": pixels
                               for name, pixels in channels.items() if name.startswith(prefix)})
        return passes

    def _farm_tree(self, image: bpy.types.Image) -> bpy.types.NodeTree:
        if self.scene_tree is not None:
            tree = self.compositor.user_tree_to_edit()
        else:  # what a render without compositing writes: the first rendered view layer's Combined
            tree, output = self.compositor.new_tree("FarmComposite")
            layer = tree.nodes.new("CompositorNodeRLayers")
            layer.layer = self._first_layer
            tree.links.new(layer.outputs["Image"], output)
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
        if "Prefilter" in denoise.inputs:  # Blender 5.0: menu sockets, named by their labels
            denoise.inputs["Prefilter"].default_value = _PREFILTER[prefilter]
            denoise.inputs["Quality"].default_value = _QUALITY[quality]
        else:  # Blender 4.5: node properties with Cycles' own identifiers
            denoise.prefilter, denoise.quality = prefilter, quality
        return denoise.outputs["Image"]


def _renders_more_than_combined(scene: bpy.types.Scene) -> bool:
    """Whether a multilayer EXR of this scene holds more than one view layer's Combined."""
    layers = [layer for layer in scene.view_layers if layer.use]
    if len(layers) != 1:
        return True
    layer = layers[0]
    if layer.aovs or layer.lightgroups or layer.cycles.denoising_store_passes:
        return True
    flags = [(owner, name) for owner in (layer, layer.cycles, layer.eevee) for name in owner.bl_rna.properties.keys()
             if name.startswith("use_pass_") and name not in ("use_pass_combined", "use_pass_cryptomatte_accurate")]
    return any(getattr(owner, name) for owner, name in flags)
