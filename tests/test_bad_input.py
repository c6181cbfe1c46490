"""Bad input: one line on stderr, exit code 2, no traceback, nothing written to --out."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SHARED_SCENES, farm, make_scene


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
    }


CASES = ["missing file", "not a blend", "lfs pointer", "shared not-a-blend", "truncated", "corrupt", "no camera",
         "shared scene without camera", "empty frame range", "frames outside nothing", "zero tile",
         "negative tile", "text tile", "unwritable out", "out is a file", "out under a file", "zero workers",
         "sample chunks without cycles"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line(case, tmp_path, state, good_blend):
    args, expected = _bad_inputs(tmp_path, good_blend)[case]
    done = farm("render", *args, state=state)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert expected in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
