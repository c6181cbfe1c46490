"""Tile geometry and job settings: plain Python, no Blender."""

from __future__ import annotations

import numpy as np
import pytest

from farm_pipelines.errors import BadInput
from farm_pipelines.job import JobSettings, TileSize, check_job_name, job_name_for, parse_frames, parse_tile
from farm_pipelines.manifest import FrameManifest, plan_frame
from farm_pipelines.tiles import Box, border_for_box, border_region, render_size, split


@pytest.mark.parametrize("region,tile", [
    (Box(0, 0, 333, 187), (64, 64)), (Box(0, 0, 320, 179), (37, 37)),
    (Box(43, 39, 256, 168), (50, 40)), (Box(0, 0, 7, 5), (16, 16)),
])
def test_tiles_cover_every_pixel_exactly_once(region, tile):
    hits = np.zeros((region.y1, region.x1), np.int32)
    boxes = split(region, *tile)
    for box in boxes:
        assert 0 < box.width <= tile[0] and 0 < box.height <= tile[1]
        hits[box.y0:box.y1, box.x0:box.x1] += 1
    assert (hits[region.y0:region.y1, region.x0:region.x1] == 1).all()
    assert hits.sum() == region.width * region.height


def test_render_size_uses_blenders_integer_arithmetic():
    assert render_size(641, 359, 50) == (320, 179)
    assert render_size(1920, 1080, 33) == (633, 356)


def test_border_fractions_round_trip_through_blenders_truncation():
    width, height = 333, 187
    for box in split(Box(0, 0, width, height), 29, 31):
        fractions = np.array(border_for_box(box, width, height), np.float32)  # Blender stores float32
        assert border_region(width, height, tuple(float(f) for f in fractions)) == box


def test_plan_gives_overscan_only_to_split_frames():
    settings = JobSettings(tile=TileSize(32, 32), overscan=4)
    manifest = plan_frame(5, (100, 60), Box(0, 0, 100, 60), False, settings)
    assert len(manifest.tiles) == 8
    inner = [t for t in manifest.tiles if t.box.x0 == 32 and t.box.y0 == 32][0]
    assert inner.render_box == Box(28, 28, 68, 60)
    assert FrameManifest.from_json(manifest.to_json()) == manifest
    whole = plan_frame(5, (100, 60), Box(0, 0, 100, 60), False, JobSettings(tile=TileSize(), overscan=4))
    assert [t.render_box for t in whole.tiles] == [Box(0, 0, 100, 60)]


@pytest.mark.parametrize("text", ["0", "-4", "abc", "64x", "x64", "1.5", "64x0", ""])
def test_bad_tile_sizes_are_rejected(text):
    with pytest.raises(BadInput):
        parse_tile(text)


def test_tile_sizes_parse():
    assert parse_tile("64") == TileSize(64, 64)
    assert parse_tile("96x48") == TileSize(96, 48)


def test_frame_ranges():
    assert parse_frames("3-5").frames(1, 250) == [3, 4, 5]
    assert parse_frames(None, 2).frames(0, 6) == [0, 2, 4, 6]
    assert parse_frames("-2--1").frames(1, 1) == [-2, -1]
    with pytest.raises(BadInput):
        parse_frames("5-3")
    with pytest.raises(BadInput):
        parse_frames("one")


def test_job_names_are_safe_and_keep_display_names_apart():
    name = job_name_for("../../etc/passwd", "/a/x.blend")
    assert "/" not in name and not name.startswith(".") and check_job_name(name) == name
    unicode = job_name_for("Épisode 1 – ünïcode scène", "/a/b.blend")
    assert check_job_name(unicode).startswith("Episode_1_unicode_scene-")
    assert job_name_for("shot 1", "/a/shot 1.blend") != job_name_for("shot_1", "/a/shot_1.blend")
    for bad in ("..", "../x", "a/b", ".hidden", ""):
        with pytest.raises(BadInput):
            check_job_name(bad)
