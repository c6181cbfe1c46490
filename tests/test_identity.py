"""Tiled farm frames against one whole-frame Blender render: the core promise, pixel by pixel."""

from __future__ import annotations

import pytest
from conftest import farm, make_scene, max_difference, render_whole

CASES = {
    # name: (scene options, tile argument, allowed difference in 8-bit steps)
    "odd-size": ({"size": [333, 187], "dither": 0.0, "frames": [2, 3]}, "50x40", 0),
    "half-percentage": ({"size": [641, 359], "percentage": 50, "dither": 0.0, "frames": [1, 1]}, "37", 0),
    "border-crop": ({"size": [333, 187], "dither": 0.0, "frames": [1, 1], "border": [0.13, 0.21, 0.77, 0.9],
                     "crop": True}, "32", 0),
    "border-no-crop": ({"size": [333, 187], "dither": 0.0, "frames": [1, 1], "border": [0.3, 0.05, 0.95, 0.6],
                        "crop": False}, "29x31", 0),
    "dither-on": ({"size": [333, 187], "dither": 1.0, "frames": [1, 1]}, "64", 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tiled_frames_match_a_whole_frame_render(case, tmp_path, state):
    options, tile, allowed = CASES[case]
    blend = make_scene(tmp_path / "scene.blend", **options)
    first, last = options["frames"]
    reference = render_whole(blend, tmp_path / "whole", list(range(first, last + 1)))

    done = farm("render", blend, "--tile", tile, "--workers", 2, "--out", tmp_path / "farm", state=state)
    assert done.returncode == 0, done.stderr

    for frame, whole in reference.items():
        tiled = tmp_path / "farm" / f"{frame:06d}.png"
        assert tiled.exists(), sorted(p.name for p in (tmp_path / "farm").iterdir())
        assert max_difference(tiled, whole) <= allowed
