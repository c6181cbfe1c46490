"""Bad input: one line on stderr, exit code 2, no traceback, nothing written to --out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import SHARED_SCENES, farm, make_scene

from farm_pipelines.errors import BadInput
from farm_pipelines.job import FrameRange, JobSettings, TileSize
from farm_pipelines.local.farm import LocalFarm


@pytest.fixture(scope="module")
def good_blend(tmp_path_factory) -> Path:
    return make_scene(tmp_path_factory.mktemp("good") / "good.blend", frames=[1, 1])


def _bad_inputs(tmp: Path, good: Path) -> dict[str, tuple[list, str]]:
    text = tmp / "notes.blend"
    text.write_text("just some text\n")
    truncated = tmp / "truncated.blend"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    corrupt = tmp / "corrupt.blend"
    corrupt.write_bytes(good.read_bytes()[:12] + bytes(range(256)) * 40)
    no_camera = make_scene(tmp / "no_camera.blend", camera=False, frames=[1, 1])
    lfs = tmp / "pointer.blend"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 1234567\n")
    a_file = tmp / "a_file"
    a_file.write_text("x")
    out = tmp / "out"
    return {
        "missing file": ([tmp / "nope.blend", "--out", out], "file not found"),
        "not a blend": ([text, "--out", out], "is not a .blend file"),
        "lfs pointer": ([lfs, "--out", out], "Git LFS pointer"),
        # The shared README calls this an LFS pointer; it is really a `git show` tree listing (text).
        "shared not-a-blend": ([SHARED_SCENES / "gltf" / "10_captain_joe.blend", "--out", out],
                               "is not a .blend file"),
        "truncated": ([truncated, "--out", out], "truncated or corrupt"),
        "corrupt": ([corrupt, "--out", out], "truncated or corrupt"),
        "no camera": ([no_camera, "--out", out], "no active camera"),
        "shared scene without camera": ([SHARED_SCENES / "gltf" / "16_volume.blend", "--out", out],
                                        "no active camera"),
        "empty frame range": ([good, "--frames", "5-3", "--out", out], "is empty"),
        "frames outside nothing": ([good, "--frames", "x-y", "--out", out], "not understood"),
        "zero tile": ([good, "--tile", "0", "--out", out], "greater than 0"),
        "negative tile": ([good, "--tile", "-8", "--out", out], "not a number"),
        "text tile": ([good, "--tile", "big", "--out", out], "not a number"),
        "unwritable out": ([good, "--out", "/proc/farm-frames"], "cannot be written"),
        "out is a file": ([good, "--out", a_file], "not a directory"),
        "out under a file": ([good, "--out", a_file / "frames"], "is a file"),
        "zero workers": ([good, "--workers", "0", "--out", out], "above 0"),
        "sample chunks without cycles": ([SHARED_SCENES / "gltf" / "04_lights.blend", "--sample-chunks", "2",
                                          "--out", out], "needs Cycles"),
        "empty out": ([good, "--out", ""], "--out: is empty"),
        "absurd workers": ([good, "--workers", "1000000000", "--out", out], "runs 1 to 256"),
        "frame beyond blender": ([good, "--frames", "1-2000000", "--out", out], "not a frame Blender can render"),
    }


CASES = ["missing file", "not a blend", "lfs pointer", "shared not-a-blend", "truncated", "corrupt", "no camera",
         "shared scene without camera", "empty frame range", "frames outside nothing", "zero tile",
         "negative tile", "text tile", "unwritable out", "out is a file", "out under a file", "zero workers",
         "sample chunks without cycles", "empty out", "absurd workers", "frame beyond blender"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line(case, tmp_path, state, good_blend):
    args, expected = _bad_inputs(tmp_path, good_blend)[case]
    done = farm("render", *args, state=state)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert expected in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("make, expected", [
    (lambda: JobSettings(tile=TileSize(0, 0)), "must be two whole numbers above 0"),
    (lambda: JobSettings(tile=TileSize(64, None)), "must be two whole numbers above 0"),
    (lambda: JobSettings(frames=FrameRange(step=0)), "frame step 0 must be"),
    (lambda: JobSettings(frames=FrameRange(5, 3)), "is empty"),
    (lambda: JobSettings(file_format="JPEG"), "'JPEG' is not one the farm writes"),
    (lambda: JobSettings(overscan=-2), "overscan -2 must be"),
    (lambda: JobSettings(sample_chunks=0), "sample chunks 0 must be"),
    (lambda: LocalFarm(workers=0), "a local farm runs 1 to 256"),
])
def test_the_api_checks_settings_as_the_cli_does(make, expected):
    """The add-on and scripts build JobSettings themselves: a bad one is BadInput at once, not an error
    from deep inside a run after tiles have rendered."""
    with pytest.raises(BadInput, match=re.escape(expected)):
        make()


def test_a_negative_frame_range_works_with_a_space(tmp_path, state):
    blend = make_scene(tmp_path / "scene.blend", size=[16, 16], frames=[1, 1])
    done = farm("render", blend, "--frames", "-3--1", "--whole-frame", "--out", tmp_path / "out", state=state)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["-00001.png", "-00002.png", "-00003.png"]


def test_a_second_scene_into_the_same_out_is_refused_and_the_same_one_may_rerun(tmp_path, state):
    first = make_scene(tmp_path / "first.blend", size=[16, 16], frames=[1, 1])
    second = make_scene(tmp_path / "second.blend", size=[16, 16], frames=[1, 1], color=[0.1, 0.8, 0.2])
    out = tmp_path / "frames"
    assert farm("render", first, "--whole-frame", "--out", out, state=state).returncode == 0
    before = (out / "000001.png").read_bytes()
    refused = farm("render", second, "--whole-frame", "--out", out, state=state)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "holds the frames of another job ('first')" in refused.stderr
    assert (out / "000001.png").read_bytes() == before
    again = farm("render", first, "--whole-frame", "--out", out, state=state)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["000001.png"]  # nothing of the farm's own in the folder
    (out / "000001.png").unlink()  # emptied, as the message says: the other scene may go there now
    assert farm("render", second, "--whole-frame", "--out", out, state=state).returncode == 0
