"""Which frames a job renders: the scene's own range and step, as Blender renders them, unless asked otherwise."""

from __future__ import annotations

from conftest import farm, make_scene

from farm_pipelines.job import FrameRange, parse_frames


def test_the_scenes_frame_step_fills_what_was_not_asked():
    assert FrameRange().frames(1, 7, 3) == [1, 4, 7]
    assert parse_frames("2-8").frames(1, 7, 3) == [2, 5, 8]
    assert parse_frames(None, 2).frames(1, 7, 3) == [1, 3, 5, 7]


def test_the_farm_renders_the_frames_blender_would(tmp_path, state):
    """Frames 1-7 at the scene's step 3: Blender renders 1, 4 and 7, and so does the farm; --step still wins."""
    blend = make_scene(tmp_path / "scene.blend", size=[16, 16], frames=[1, 7], frame_step=3)
    done = farm("render", blend, "--whole-frame", "--out", tmp_path / "scene-step", state=state)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "scene-step").iterdir()) == ["000001.png", "000004.png", "000007.png"]
    done = farm("render", blend, "--whole-frame", "--step", "2", "--out", tmp_path / "asked", state=state)
    assert done.returncode == 0, done.stderr
    assert sorted(p.stem for p in (tmp_path / "asked").iterdir()) == ["000001", "000003", "000005", "000007"]
