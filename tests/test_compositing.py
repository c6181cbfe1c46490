"""Compositing and denoising once on the whole frame: tiled farm output against one whole-frame render.

The bar (issue 5): mean absolute difference <= 0.5/255 and no seam, i.e. the
largest difference within 2 px of a tile border is at most 1/255 above the
largest inside tiles. The naive way (each tile composited or denoised on its
own) is measured by the same metric and must show a seam, so the metric can fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, farm, make_scene, read_image, render_whole

from farm_pipelines.seams import mean_difference, paste, seam_excess
from farm_pipelines.tiles import Box, split

SIZE, TILE = (128, 96), 32
CASES = {
    # name: (compositing_scene edits, extra farm arguments)
    "glare-blur": ({"glare_blur": True}, []),
    "denoise": ({"denoise": True}, []),
    "glare-blur-denoise-overscan": ({"glare_blur": True, "denoise": True}, ["--overscan", "4"]),
}


def compositing_scene(mode: str, source: Path, target: Path, options: dict) -> None:
    subprocess.run([sys.executable, str(ROOT / "tests" / "compositing_scene.py"), mode, str(source), str(target),
                    json.dumps(options)], check=True, capture_output=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_farm_composites_once_without_seams(case, tmp_path, state):
    edits, extra = CASES[case]
    plain = make_scene(tmp_path / "plain.blend", size=list(SIZE), samples=8, frames=[1, 1], dither=0.0)
    blend = tmp_path / "scene.blend"
    compositing_scene("edit", plain, blend, edits)
    whole = read_image(render_whole(blend, tmp_path / "whole", [1])[1])

    done = farm("render", blend, "--tile", TILE, "--workers", 2, *extra, "--out", tmp_path / "farm", state=state)
    assert done.returncode == 0, done.stderr
    ours = read_image(tmp_path / "farm" / "000001.png")

    naive_dir = tmp_path / "naive"
    compositing_scene("naive", blend, naive_dir, {"tile": [TILE, TILE], "frame": 1})
    boxes = split(Box(0, 0, *SIZE), TILE, TILE)
    naive = paste(boxes, [read_image(naive_dir / f"{i:04d}.png") for i in range(len(boxes))], SIZE)

    ours_seam, naive_seam = seam_excess(ours, whole, boxes), seam_excess(naive, whole, boxes)
    print(f"{case}: ours mean {mean_difference(ours, whole):.3f} seam {ours_seam:.0f}; "
          f"naive mean {mean_difference(naive, whole):.3f} seam {naive_seam:.0f} (8-bit steps)")
    assert mean_difference(ours, whole) <= 0.5
    assert ours_seam <= 1
    assert naive_seam > 1 and naive_seam > ours_seam, "the naive way should show a seam"
