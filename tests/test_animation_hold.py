"""Held animation: a frame's actions come off while its tiles render, and only where that changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, farm, make_scene, max_difference, render_whole

PROBE = """
import bpy, json, sys
sys.path.insert(0, sys.argv[-2])
from farm_pipelines.blender import animation_hold, session
from pathlib import Path
scene = session.open_untrusted(Path(sys.argv[-1]))
sphere, light = bpy.data.objects["Sphere"], bpy.data.lights["Point"]
tint = bpy.data.materials["Tint"].node_tree.nodes["Principled BSDF"].inputs["Base Color"]
report = {}
for frame in (2, 3):
    scene.frame_set(frame)
    held = animation_hold.hold(scene)
    report[frame] = {"held": sorted(owner.name for owner, _, _ in held.held),
                     "values": [sphere.location.x, light.energy, tint.default_value[1]]}
    held.release()
report["actions back"] = all(o.animation_data.action is not None for o in (sphere, light))
print(json.dumps(report))
"""


def _probe(blend) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, str(ROOT), str(blend)], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_only_plain_actions_are_held_and_the_frame_keeps_its_values(tmp_path):
    blend = make_scene(tmp_path / "scene.blend", frames=[2, 3], animate=["material", "light", "nla"])
    report = _probe(blend)
    # The cube's motion comes from an NLA strip under its action: holding it would change the frame.
    assert report["2"]["held"] == report["3"]["held"] == ["Point", "Shader Nodetree", "Sphere"]
    assert report["2"]["values"] == [0.0, 600.0, 0.20000000298023224]
    assert report["3"]["values"] == [1.5, 150.0, 0.699999988079071]
    assert report["actions back"]


def test_motion_blur_holds_nothing(tmp_path):
    blend = make_scene(tmp_path / "scene.blend", frames=[2, 3], animate=["material", "light"], motion_blur=True)
    assert _probe(blend)["2"]["held"] == []


def test_held_frames_match_a_whole_frame_render(tmp_path, state):
    """Every kind of animation, two frames in a row per worker, tiles pixel-identical to plain Blender."""
    blend = make_scene(tmp_path / "scene.blend", size=[160, 90], frames=[2, 3], dither=0.0,
                       animate=["material", "light", "nla"])
    reference = render_whole(blend, tmp_path / "whole", [2, 3])
    done = farm("render", blend, "--tile", "24", "--workers", 2, "--out", tmp_path / "farm", state=state)
    assert done.returncode == 0, done.stderr
    for frame, whole in reference.items():
        assert max_difference(tmp_path / "farm" / f"{frame:06d}.png", whole) == 0
