"""Killed runs' work folders: a farm killed with kill -9 leaves them; the next run removes them and keeps a
live farm's (each live farm holds an flock in its own, ``farm_pipelines/local/work_dirs.py``)."""

from __future__ import annotations

from conftest import farm, kill_farm_when, make_scene
from test_cache_clean import _run_dir_holder


def test_the_next_run_removes_a_killed_runs_work_folder_and_keeps_a_live_farms(tmp_path, state):
    blend = make_scene(tmp_path / "scene.blend", size=[96, 64], samples=8, frames=[1, 2])
    args = ["render", blend, "--tile", "16", "--workers", "2", "--out", tmp_path / "out"]
    kill_farm_when(*args, state=state, ready=lambda: bool(list(state.glob("datums/renderer/*/.files.json"))))
    killed = list((state / "work").iterdir())
    assert killed and all((p / ".lock").exists() for p in killed)
    live, live_dir = _run_dir_holder(state, files=2)  # another farm on this state, rendering now
    try:
        again = farm(*args, state=state)
        assert again.returncode == 0, again.stderr
        assert f"removed {len(killed)} killed run(s)' work folder(s)" in again.stderr, again.stderr
        assert not any(p.exists() for p in killed) and live_dir.is_dir()
        assert [p.name for p in (state / "work").iterdir()] == [live_dir.name]  # the rerun removed its own
    finally:
        live.kill()
        live.wait()
