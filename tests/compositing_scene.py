"""Blender-side helpers for the compositing tests and ``bench/composite.py``, run in their own process.

``python tests/compositing_scene.py edit IN.blend OUT.blend '{"glare_blur": true, "denoise": true}'``
gives a scene a Glare -> Blur compositor and/or Cycles denoising (OpenImageDenoise);
``"adaptive": false`` turns adaptive sampling off.

``python tests/compositing_scene.py naive IN.blend OUT_DIR '{"tile": [w, h], "frame": 1}'``
renders the naive way: each tile on its own, with the scene's compositor and
denoiser applied to the tile, to ``OUT_DIR/<index>.png`` (tile order of ``tiles.split``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from farm_pipelines.tiles import Box, border_for_box, split  # noqa: E402


def edit(scene: bpy.types.Scene, options: dict) -> None:
    if options.get("glare_blur"):
        tree, output = compositor_tree(scene)
        layers = tree.nodes.new("CompositorNodeRLayers")
        glare = tree.nodes.new("CompositorNodeGlare")
        glare.inputs["Threshold"].default_value = 0.5
        blur = tree.nodes.new("CompositorNodeBlur")
        blur.inputs["Size"].default_value = (6, 6)
        tree.links.new(layers.outputs["Image"], glare.inputs["Image"])
        tree.links.new(glare.outputs["Image"], blur.inputs["Image"])
        tree.links.new(blur.outputs["Image"], output)
        scene.render.use_compositing = True
    if "adaptive" in options:
        scene.cycles.use_adaptive_sampling = options["adaptive"]
    if options.get("denoise"):
        scene.cycles.use_denoising = True
        scene.cycles.denoiser = "OPENIMAGEDENOISE"


def compositor_tree(scene: bpy.types.Scene) -> tuple[bpy.types.NodeTree, bpy.types.NodeSocket]:
    """A new, empty compositor for the scene and the input that takes its result."""
    if hasattr(scene, "compositing_node_group"):  # Blender 5.0: a node group the scene points at
        tree = bpy.data.node_groups.new("Compositing", "CompositorNodeTree")
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        scene.compositing_node_group = tree
        return tree, tree.nodes.new("NodeGroupOutput").inputs[0]
    scene.use_nodes = True  # Blender 4.5: the scene's own tree, with a Composite node
    tree = scene.node_tree
    tree.nodes.clear()
    return tree, tree.nodes.new("CompositorNodeComposite").inputs["Image"]


def naive(scene: bpy.types.Scene, out_dir: Path, options: dict) -> None:
    render = scene.render
    width, height = render.resolution_x * render.resolution_percentage // 100, \
        render.resolution_y * render.resolution_percentage // 100
    render.use_border = render.use_crop_to_border = True
    render.image_settings.file_format = "PNG"
    scene.frame_set(options.get("frame", scene.frame_start))
    for index, box in enumerate(split(Box(0, 0, width, height), *options["tile"])):
        render.border_min_x, render.border_min_y, render.border_max_x, render.border_max_y = \
            border_for_box(box, width, height)
        render.filepath = str(out_dir / f"{index:04d}.png")
        bpy.ops.render.render(write_still=True)


def main() -> None:
    mode, source, target, options = sys.argv[-4], sys.argv[-3], Path(sys.argv[-2]), json.loads(sys.argv[-1])
    bpy.ops.wm.open_mainfile(filepath=source, load_ui=False, use_scripts=False)
    scene = bpy.context.scene
    if mode == "edit":
        edit(scene, options)
        bpy.ops.wm.save_as_mainfile(filepath=str(target))
    else:
        naive(scene, target, options)


if __name__ == "__main__":
    main()
