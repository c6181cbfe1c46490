"""Which frames a job renders: the scene's own range and step, as Blender renders them, unless asked otherwise."""

from __future__ import annotations

import pytest
from conftest import farm, make_scene

from farm_pipelines.errors import BadInput
from farm_pipelines.job import FrameRange, frames_outside, parse_frames


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


def test_frames_beyond_the_scene_are_said_and_a_typos_million_is_refused_at_once(tmp_path, state):
    """Blender renders frames past the scene's end (the animation holds), so a few are a warning; a
    million past a two-frame shot is a typo, refused before anything is split or rendered."""
    assert frames_outside([1, 2], 1, 2) is None
    assert "2 of frames 1-4 lie beyond the scene's range 1-2" in frames_outside([1, 2, 3, 4], 1, 2)
    with pytest.raises(BadInput, match="999998 frames beyond the scene's range 1-2"):
        frames_outside(list(range(1, 1_000_001)), 1, 2)
    assert frames_outside(list(range(1, 1002)), 1, 200)  # 801 beyond a 200-frame shot: still a warning

    blend = make_scene(tmp_path / "scene.blend", size=[16, 16], frames=[1, 2])
    typo = farm("render", blend, "--whole-frame", "--frames", "1-1000000", "--out", tmp_path / "typo", state=state)
    assert typo.returncode == 2, typo.stderr
    [line] = [line for line in typo.stderr.splitlines() if line.startswith("farm: error:")]
    assert "999998 frames beyond the scene's range 1-2" in line and "Traceback" not in typo.stderr
    assert not (state / "repos" / "splitter").exists() and not (tmp_path / "typo").exists()

    past = farm("render", blend, "--whole-frame", "--frames", "1-3", "--out", tmp_path / "past", state=state)
    assert past.returncode == 0, past.stderr
    assert "warning: 1 of frames 1-3 lie beyond the scene's range 1-2" in past.stderr
    assert sorted(p.name for p in (tmp_path / "past").iterdir()) == ["000001.png", "000002.png", "000003.png"]
