"""Blend files come from other people: their Python must never run on the farm."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, farm, make_scene, max_difference, render_whole

TRUSTING_OPEN = (
    "import bpy, sys\n"
    "bpy.context.preferences.filepaths.use_scripts_auto_execute = True\n"
    "bpy.ops.wm.open_mainfile(filepath=sys.argv[-1], use_scripts=True)\n"
)


def test_registered_text_block_does_not_run(tmp_path, state):
    marker = tmp_path / "pwned.txt"
    blend = make_scene(tmp_path / "trojan.blend", frames=[1, 1], size=[32, 24], text_block_writes=str(marker))
    # Control: a Blender that trusts the file does run the payload.
    subprocess.run([sys.executable, "-c", TRUSTING_OPEN, str(blend)], check=True, capture_output=True)
    assert marker.read_text() == "ran"
    marker.unlink()

    done = farm("render", blend, "--tile", "16", "--out", tmp_path / "out", state=state)

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "000001.png").exists()
    assert not marker.exists()


FILE_OUTPUT_SCENE = """
import sys
import bpy
sys.path.insert(0, sys.argv[-3])
import scene_builder
scene_builder.build({"size": [32, 16], "frames": [1, 1], "dither": 0.0})
scene = bpy.context.scene
scene.render.use_compositing = True
if hasattr(scene, "compositing_node_group"):  # Blender 5.0: the compositor is a node group
    tree = bpy.data.node_groups.new("Compositing", "CompositorNodeTree")
    tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    result = tree.nodes.new("NodeGroupOutput").inputs[0]
    scene.compositing_node_group = tree
else:
    scene.use_nodes = True
    tree = scene.node_tree
    tree.nodes.clear()
    result = tree.nodes.new("CompositorNodeComposite").inputs["Image"]
layers = tree.nodes.new("CompositorNodeRLayers")
tree.links.new(layers.outputs["Image"], result)
writer = tree.nodes.new("CompositorNodeOutputFile")
if hasattr(writer, "file_output_items"):
    writer.directory = sys.argv[-2]
    writer.file_output_items.new("RGBA", "Image")
else:
    writer.base_path = sys.argv[-2]
tree.links.new(layers.outputs["Image"], writer.inputs[0])
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1])
"""


@pytest.mark.parametrize("tiles", [["--whole-frame"], ["--tile", "16"]])
def test_a_file_output_node_never_writes_outside_the_job(tiles, tmp_path, state):
    """A compositor File Output node aimed at an absolute folder writes there in plain Blender; on the farm it is
    switched off, in a whole-frame render (the renderer composites) and in a tiled one (the merger does)."""
    outside = tmp_path / "elsewhere"
    blend = tmp_path / "scene.blend"
    subprocess.run([sys.executable, "-c", FILE_OUTPUT_SCENE, str(ROOT / "tests"), f"{outside}/", str(blend)],
                   check=True, capture_output=True)
    whole = render_whole(blend, tmp_path / "whole", [1])
    assert list(outside.iterdir()), "plain Blender writes the File Output node's file"
    shutil.rmtree(outside)
    done = farm("render", blend, *tiles, "--out", tmp_path / "out", state=state)
    assert done.returncode == 0, done.stderr
    assert not outside.exists()
    assert max_difference(tmp_path / "out" / "000001.png", whole[1]) == 0
