"""Real scenes by other people (../shared/scenes): dependencies travel with the job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import SHARED_SCENES, farm, max_difference, read_image, render_whole

SHRINK = (
    "import bpy, sys\n"
    "bpy.ops.wm.open_mainfile(filepath=sys.argv[-2], load_ui=False, use_scripts=False)\n"
    "scene = bpy.context.scene\n"
    "scene.render.resolution_percentage = 6\n"
    "scene.cycles.samples = 4\n"
    "scene.cycles.use_denoising = False\n"
    "scene.frame_start = scene.frame_end = 1\n"
    "bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1], copy=True, relative_remap=True)\n"
)


def small_copy(source: Path, destination: Path) -> Path:
    """A quick-to-render copy that still refers to the originals by (remapped) relative paths."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", SHRINK, str(source), str(destination)], check=True, capture_output=True)
    return destination


def test_suzanne_with_textures_library_and_hdr_renders_as_at_home(tmp_path, state):
    blend = small_copy(SHARED_SCENES / "gltf" / "02_suzanne.blend", tmp_path / "home" / "suzanne.blend")
    home = render_whole(blend, tmp_path / "whole", [1])[1]

    done = farm("render", blend, "--tile", "24", "--out", tmp_path / "farm", state=state)

    assert done.returncode == 0, done.stderr
    assert "missing" not in done.stderr and "not packed" not in done.stderr
    assert max_difference(tmp_path / "farm" / "000001.png", home) <= 1
    pixels = read_image(home)[..., :3].astype(int)  # BGR
    pink = (pixels[..., 2] > 200) & (pixels[..., 0] > 200) & (pixels[..., 1] < 50)
    assert pink.mean() < 0.01, "the home render itself lost its textures"


def test_missing_texture_is_named_in_a_warning_and_strict_refuses(tmp_path, state):
    blend = small_copy(SHARED_SCENES / "gltf" / "01_missing_textures.blend", tmp_path / "scene.blend")

    done = farm("render", blend, "--whole-frame", "--out", tmp_path / "farm", state=state)
    assert done.returncode == 0, done.stderr
    assert "warning: missing file" in done.stderr and "MissingTexture.png" in done.stderr
    assert (tmp_path / "farm" / "000001.png").exists()

    strict = farm("render", blend, "--whole-frame", "--strict", "--out", tmp_path / "strict", state=state)
    assert strict.returncode == 2
    assert "MissingTexture.png" in strict.stderr and "Traceback" not in strict.stderr
    assert not (tmp_path / "strict").exists()


def test_frames_of_animated_scene_starting_at_zero(tmp_path, state):
    blend = small_copy(SHARED_SCENES / "gltf" / "03_animated_cube.blend", tmp_path / "cube.blend")
    done = farm("render", blend, "--frames", "0-1", "--tile", "32", "--out", tmp_path / "farm", state=state)
    assert done.returncode == 0, done.stderr
    home = render_whole(blend, tmp_path / "whole", [0, 1])
    for frame, path in home.items():
        assert max_difference(tmp_path / "farm" / f"{frame:06d}.png", path) <= 1
    assert not np.array_equal(read_image(home[0]), read_image(home[1]))
