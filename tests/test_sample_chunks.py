"""Sample splitting: K workers render disjoint subsets of a frame's samples, the merger averages them.

With a fixed seed, Cycles' sample subsets ``[offset, offset + n)`` are exactly
the samples a full render takes, so the weighted mean of the chunks equals the
full render up to float summation order: at most one 8-bit step on a pixel that
sits on a rounding edge. A render with half the samples, the noise a missing
chunk would leave, is far outside that tolerance, which keeps the test honest.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import farm, make_scene, read_image, render_whole
from test_compositing import compositing_scene

from farm_pipelines.job import JobSettings, TileSize
from farm_pipelines.manifest import SampleChunk, plan_frame, split_samples
from farm_pipelines.merge import merge_chunks
from farm_pipelines.seams import mean_difference
from farm_pipelines.tiles import Box


def test_chunks_cover_every_sample_once():
    for samples, count in ((16, 3), (5, 5), (7, 2), (100, 8)):
        chunks = split_samples(samples, count)
        assert [c.offset for c in chunks] == [sum(c.samples for c in chunks[:i]) for i in range(len(chunks))]
        assert sum(c.samples for c in chunks) == samples and max(c.samples for c in chunks) - min(
            c.samples for c in chunks) <= 1
    assert split_samples(2, 4) == (SampleChunk(0, 0, 1), SampleChunk(1, 1, 1))
    assert split_samples(16, 1) == ()
    manifest = plan_frame(1, (100, 60), Box(0, 0, 100, 60), False,
                          JobSettings(tile=TileSize(), sample_chunks=3), samples=16)
    assert manifest.farm_composites and len(manifest.pieces()) == 3
    assert {manifest.piece_name(t, c) for t, c in manifest.pieces()} == {"0000_00", "0000_01", "0000_02"}


def test_chunks_are_weighted_by_samples_and_depth_takes_the_nearest():
    a = {"L.Combined.R": np.full((2, 2), 1.0, np.float32), "L.Depth.Z": np.full((2, 2), 5.0, np.float32)}
    b = {"L.Combined.R": np.full((2, 2), 4.0, np.float32), "L.Depth.Z": np.full((2, 2), 3.0, np.float32)}
    merged = merge_chunks([(SampleChunk(0, 0, 1), a), (SampleChunk(1, 1, 2), b)])
    assert np.allclose(merged["L.Combined.R"], 3.0) and np.allclose(merged["L.Depth.Z"], 3.0)


@pytest.mark.parametrize("tile,edits", [("whole", {}), ("40", {"denoise": True})])
def test_sample_chunks_match_a_full_render(tile, edits, tmp_path, state):
    plain = make_scene(tmp_path / "plain.blend", size=[96, 64], samples=16, frames=[1, 1], dither=0.0)
    blend = tmp_path / "scene.blend"
    compositing_scene("edit", plain, blend, {"adaptive": False, **edits})
    full = read_image(render_whole(blend, tmp_path / "full", [1])[1]).astype(np.int32)
    size = ["--whole-frame"] if tile == "whole" else ["--tile", tile]

    done = farm("render", blend, *size, "--sample-chunks", 3, "--workers", 2, "--out", tmp_path / "farm",
                state=state)
    assert done.returncode == 0, done.stderr
    chunked = read_image(tmp_path / "farm" / "000001.png").astype(np.int32)
    assert np.abs(chunked - full).max() <= 1
    assert mean_difference(chunked, full) <= 0.01

    half = make_scene(tmp_path / "half.blend", size=[96, 64], samples=8, frames=[1, 1], dither=0.0)
    compositing_scene("edit", half, tmp_path / "half-edited.blend", {"adaptive": False, **edits})
    fewer = read_image(render_whole(tmp_path / "half-edited.blend", tmp_path / "half", [1])[1])
    assert mean_difference(fewer, full) > 0.1, "half the samples should be visibly different"
