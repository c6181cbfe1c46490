"""Real processes: a killed run resumes with only the missing tiles; concurrent jobs never mix."""

from __future__ import annotations

import os
import re
import subprocess

from conftest import FARM, farm, kill_farm_when, make_scene, max_difference, render_whole


def _tiles_stored(state) -> int:
    folder = state / "datums" / "renderer"
    return len([p for p in folder.iterdir() if (p / ".files.json").exists()]) if folder.exists() else 0


def test_killed_run_resumes_with_only_the_missing_tiles(tmp_path, state):
    blend = make_scene(tmp_path / "scene.blend", size=[96, 64], samples=8, frames=[1, 2])
    args = ["render", blend, "--tile", "16", "--workers", "2", "--out", tmp_path / "out"]
    kill_farm_when(*args, state=state, ready=lambda: _tiles_stored(state) >= 10)  # the CLI and its workers
    before = _tiles_stored(state)
    assert 10 <= before < 48, f"{before} tiles were done when the run was killed"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())

    again = farm(*args, state=state)

    assert again.returncode == 0, again.stderr
    todo = re.search(r"renderer: (\d+) of (\d+) datum", again.stderr)
    assert todo, again.stderr
    assert (int(todo.group(1)), int(todo.group(2))) == (48 - before, 48)
    reference = render_whole(blend, tmp_path / "whole", [1, 2])
    for frame, path in reference.items():
        assert max_difference(tmp_path / "out" / f"{frame:06d}.png", path) <= 1


def test_two_jobs_submitted_together_never_mix(tmp_path, state):
    red = make_scene(tmp_path / "red" / "shot.blend", size=[80, 60], color=[0.9, 0.05, 0.05], frames=[1, 1])
    blue = make_scene(tmp_path / "blue" / "shot.blend", size=[80, 60], color=[0.05, 0.1, 0.9], frames=[1, 1])
    env = dict(os.environ, FARM_STATE_DIR=str(state))
    runs = [subprocess.Popen([*FARM, "render", str(blend), "--tile", "20", "--workers", "1",
                              "--out", str(tmp_path / f"out-{name}")], env=env, stderr=subprocess.PIPE, text=True)
            for name, blend in (("red", red), ("blue", blue))]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()
    for name, blend in (("red", red), ("blue", blue)):
        whole = render_whole(blend, tmp_path / f"whole-{name}", [1])[1]
        assert max_difference(tmp_path / f"out-{name}" / "000001.png", whole) <= 1
    assert max_difference(tmp_path / "out-red" / "000001.png", tmp_path / "out-blue" / "000001.png") > 50
