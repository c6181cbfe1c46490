"""Frames as they finish: each frame lands in --out while the rest of the job still renders.

Real renders on the local farm through the Python API the add-on uses. To show that a
frame lands before the job's last tile, without racing the clock, the test holds the
only renderer worker at its next-to-last tile: the progress callback runs on that
worker's hand-off thread, so while it waits the last tile is not handed out. The merger
runs on its own worker, so the first frame must arrive meanwhile; were frames merged
only at the end, it never would, and the wait would run out.
"""

from __future__ import annotations

import subprocess
import sys
import threading

from conftest import make_scene, max_difference, render_whole

from farm_pipelines.backend import Progress
from farm_pipelines.events import FrameDone, ProgressUpdate
from farm_pipelines.job import JobSettings, parse_tile
from farm_pipelines.local.farm import LocalFarm
from farm_pipelines.submission import render

WAIT = 120.0  # seconds the held worker waits for the first frame before the test fails


def test_the_first_frame_lands_while_the_last_tiles_still_wait(tmp_path):
    blend = make_scene(tmp_path / "scene.blend", size=[48, 32], samples=4, frames=[1, 3])
    out = tmp_path / "out"
    first_frame = threading.Event()
    seen: list[tuple[str, object]] = []
    held: list[Progress] = []

    def on_event(event: object) -> None:
        if isinstance(event, FrameDone):
            assert event.path.exists(), "a FrameDone names a frame already in --out"
            seen.append(("frame", event.frame))
            first_frame.set()
        elif isinstance(event, ProgressUpdate):
            progress = event.progress
            if progress.tiles_total and progress.tiles_done == progress.tiles_total - 1 and not held:
                held.append(progress)
                seen.append(("held", progress.tiles_done))
                first_frame.wait(WAIT)  # the worker's hand-off waits here: the last tile is not handed out
                seen.append(("released", first_frame.is_set()))

    farm = LocalFarm(tmp_path / "state", workers=1)
    frames = render(blend, JobSettings(tile=parse_tile("16")), out, backend=farm, on_event=on_event)

    assert held, "the run never reached its next-to-last tile"
    assert ("released", True) in seen, f"no frame landed while the last tile waited: {seen}"
    released = seen.index(("released", True))
    assert ("frame", 1) in seen[:released], f"frame 1 did not land before the last tile: {seen}"
    assert [path.name for path in frames] == ["000001.png", "000002.png", "000003.png"]
    reference = render_whole(blend, tmp_path / "whole", [1, 2, 3])
    for frame, path in reference.items():
        assert max_difference(out / f"{frame:06d}.png", path) <= 1


def test_a_rerun_delivers_stored_frames_at_once_and_merges_only_changed_ones(tmp_path):
    blend = make_scene(tmp_path / "scene.blend", size=[32, 24], samples=2, frames=[1, 2])
    state = tmp_path / "state"
    settings = JobSettings(tile=parse_tile("16"))
    render(blend, settings, tmp_path / "first", backend=LocalFarm(state, workers=1))
    logged: list[str] = []

    again = render(blend, settings, tmp_path / "second", backend=LocalFarm(state, workers=1, log=logged.append))

    assert [path.name for path in again] == ["000001.png", "000002.png"]
    assert not any(line.startswith("renderer:") and "to process" in line for line in logged), logged
    assert "merger: 2 frame(s) were merged by an earlier run" in logged, logged
    for path in again:
        assert max_difference(path, tmp_path / "first" / path.name) == 0


def test_a_frame_shown_in_blender_is_not_carried_into_the_next_job(tmp_path):
    """The add-on loads each delivered frame as an image, which the scene's next copy then holds; the
    next job must not carry the farm's own output (nor call it missing), and its frames stay right."""
    blend = make_scene(tmp_path / "scene.blend", size=[32, 24], samples=2, frames=[1, 2])
    state, out = tmp_path / "state", tmp_path / "out"
    settings = JobSettings(tile=parse_tile("16"))
    render(blend, settings, out, backend=LocalFarm(state, workers=1), state_dir=state)
    script = ("import bpy, sys\n"
              "bpy.ops.wm.open_mainfile(filepath=sys.argv[-2])\n"
              "image = bpy.data.images.load(sys.argv[-1])\n"
              "image.source = 'SEQUENCE'\n"  # as the add-on shows a job's frames
              "image.use_fake_user = True\n"
              "bpy.ops.wm.save_mainfile()\n")
    subprocess.run([sys.executable, "-c", script, str(blend), str(out / "000001.png")], check=True,
                   capture_output=True)
    said: list[str] = []

    render(blend, settings, out, backend=LocalFarm(state, workers=1), state_dir=state,
           on_event=lambda event: said.append(str(getattr(event, "message", ""))))

    assert not [line for line in said if "carries" in line or "missing file" in line], said
    carried = list((state / "prepared").glob("*/scene/files/**/*.png"))
    assert carried == [], carried
    reference = render_whole(blend, tmp_path / "whole", [1, 2])
    for frame, path in reference.items():
        assert max_difference(out / f"{frame:06d}.png", path) <= 1
