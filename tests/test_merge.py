"""The merger's stitching, on real OpenEXR files: placement by offset, and errors that name tiles."""

from __future__ import annotations

import numpy as np
import pytest

from farm_pipelines import merge
from farm_pipelines.job import JobSettings, parse_tile
from farm_pipelines.manifest import FrameManifest, plan_frame
from farm_pipelines.tiles import Box

WIDTH, HEIGHT = 100, 60
CHANNELS = ("ViewLayer.Combined.R", "ViewLayer.Combined.G", "ViewLayer.Combined.B", "ViewLayer.Combined.A")


def _frame() -> np.ndarray:
    """Every pixel unique: R is x, G is the row from the top, B mixes both, so a misplaced tile shows."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    return np.stack([cols, rows, cols * 1000 + rows, np.ones_like(cols)], axis=-1)


def _write_tiles(manifest: FrameManifest, folder, frame: np.ndarray) -> None:
    """Each tile as Blender writes it: its render box cut from the frame, as multilayer EXR."""
    for tile in manifest.tiles:
        box = tile.render_box
        top = HEIGHT - box.y1  # boxes count rows from the bottom, arrays from the top
        pixels = frame[top:top + box.height, box.x0:box.x1]
        merge.write_layers(folder / f"{manifest.piece_name(tile, None)}.exr",
                           {name: np.ascontiguousarray(pixels[..., i]) for i, name in enumerate(CHANNELS)})


def _manifest(overscan: int = 0) -> FrameManifest:
    settings = JobSettings(tile=parse_tile("16"), overscan=overscan)
    return plan_frame(7, (WIDTH, HEIGHT), Box(0, 0, WIDTH, HEIGHT), False, settings)


@pytest.mark.parametrize("overscan", [0, 3])
def test_tiles_land_at_their_offsets(tmp_path, overscan):
    manifest = _manifest(overscan)
    assert len(manifest.tiles) >= 10  # names like 0010 sort before 0002 as text; offsets must rule
    frame = _frame()
    _write_tiles(manifest, tmp_path, frame)
    stitched = merge.stitch_layers(manifest, tmp_path)
    for i, name in enumerate(CHANNELS):
        np.testing.assert_array_equal(stitched[name], frame[..., i])


def test_missing_and_wrong_sized_tiles_fail_the_frame_by_name(tmp_path):
    manifest = _manifest()
    _write_tiles(manifest, tmp_path, _frame())
    (tmp_path / "0003.exr").unlink()
    small = np.zeros((4, 4), np.float32)
    merge.write_layers(tmp_path / "0011.exr", {name: small for name in CHANNELS})
    with pytest.raises(merge.FrameIncomplete) as failure:
        merge.stitch_layers(manifest, tmp_path)
    message = str(failure.value)
    tile3, tile11 = manifest.tiles[3], manifest.tiles[11]
    assert message.startswith("frame 7: ")
    assert f"tile 3 {tile3.box.as_list()} piece(s) 0003 missing or unreadable" in message
    assert f"tile 11 {tile11.box.as_list()} is 4x4, expected 16x16" in message


def test_a_frame_with_every_tile_missing_is_still_one_short_line(tmp_path):
    manifest = _manifest()
    with pytest.raises(merge.FrameIncomplete) as failure:
        merge.stitch_layers(manifest, tmp_path)
    message = str(failure.value)
    assert "\n" not in message and len(message) < 500
    assert f"{len(manifest.tiles)} of {len(manifest.tiles)} tiles are bad" in message
    assert f"and {len(manifest.tiles) - 5} more" in message
