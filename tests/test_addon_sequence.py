"""Frames as they finish, in Blender: each delivered frame joins one image sequence the artist scrubs.

In the bpy module timers never fire and nothing is drawn, so the add-on's message
handling is called directly, and a frame of the sequence is read through Blender
with ``Image.scale(frame=...)`` at its own size (what the Image Editor's draw does
in a real Blender: load the frame its image user points at). The real binary, with
its UI, is ``test_the_editor_shows_frame_n_at_scene_frame_n_in_real_blender``.
"""

# ruff: noqa: F811  (the add-on fixtures of test_addon are imported, and named by the tests that take them)
from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest
from conftest import ROOT
from test_addon import addon, file_pixels, frame_pixels, pixels_of, scene  # noqa: F401  (fixtures)

from farm_pipelines.backend import Progress
from farm_pipelines.events import Done, FrameDone, ProgressUpdate

cv2 = pytest.importorskip("cv2")


def write_frame(path: Path, seed: int, size: tuple[int, int] = (16, 8)) -> Path:
    """A frame file as the farm leaves it, of noise no other frame shares (written by OpenCV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    assert cv2.imwrite(str(path), noise)
    return path


def levels(pixels: np.ndarray) -> np.ndarray:
    """Float pixels of an 8-bit file as its 8-bit levels, so a comparison is exact."""
    return np.round(pixels * 255).astype(np.uint8)


def assert_same_frame(shown: np.ndarray, path: Path) -> None:
    np.testing.assert_array_equal(levels(shown), levels(file_pixels(path)))


def image_editor() -> bpy.types.SpaceImageEditor:
    area = bpy.context.window.screen.areas[0]
    area.type = "IMAGE_EDITOR"
    return area.spaces.active


def shown_pixels(space: bpy.types.SpaceImageEditor) -> np.ndarray:
    """The pixels of the frame the editor's image user points at now, read through Blender."""
    return frame_pixels(space.image, space.image_user.frame_current)


def test_frames_grow_one_sequence_that_follows_the_timeline(addon: ModuleType, scene: bpy.types.Scene,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "frames"
    space = image_editor()
    pinned_area = bpy.context.window.screen.areas[1]
    pinned_area.type = "IMAGE_EDITOR"
    pinned = pinned_area.spaces.active
    own = bpy.data.images.new("Artist's", 4, 4)
    pinned.image, pinned.use_image_pin = own, True
    state = bpy.context.window_manager.render_farm_job
    state.job_name, state.frames_total = "user Scene", 3
    state.frames.clear()
    scene.frame_set(1)

    files = {frame: write_frame(out / f"{frame:06d}.png", frame) for frame in (1, 2)}
    addon.jobs.deliver_frame(bpy.context, state, FrameDone(1, files[1]))
    image = space.image
    assert image is not None and image.source == "SEQUENCE" and image.name == "user Scene"
    assert Path(bpy.path.abspath(image.filepath)) == files[1]
    assert pinned.image == own, "a pinned editor keeps its image"
    assert_same_frame(shown_pixels(space), files[1])

    addon.jobs.deliver_frame(bpy.context, state, FrameDone(2, files[2]))
    assert space.image == image and space.image_user.frame_duration == 2
    assert space.image_user.use_auto_refresh
    for frame in (1, 2):
        scene.frame_set(frame)
        assert space.image_user.frame_current == frame
        assert_same_frame(shown_pixels(space), files[frame])
    scene.frame_set(3)  # not delivered yet: the editor holds the newest frame
    assert space.image_user.frame_current == 2

    files[3] = write_frame(out / "000003.png", 3)  # lands while the playhead waits past the end
    addon.jobs.deliver_frame(bpy.context, state, FrameDone(3, files[3]))
    assert space.image_user.frame_current == 3
    assert_same_frame(shown_pixels(space), files[3])

    before = levels(file_pixels(files[2]))
    write_frame(files[2], 200)  # frame 2 rendered again: new pixels in the same file
    assert not np.array_equal(before, levels(file_pixels(files[2])))
    addon.jobs.deliver_frame(bpy.context, state, FrameDone(2, files[2]))
    scene.frame_set(2)
    assert_same_frame(shown_pixels(space), files[2])
    assert [(item.frame, item.image) for item in state.frames] == [(1, image.name), (2, image.name), (3, image.name)]
    assert [image.name for image in bpy.data.images if image.get(addon.images.OUTPUT_FOLDER)] == [image.name]

    state.active_frame = 0  # picking Frame 1 in the panel's list takes the playhead there
    assert scene.frame_current == 1 and space.image_user.frame_current == 1


def test_a_still_stays_one_image(addon: ModuleType, scene: bpy.types.Scene, tmp_path: Path) -> None:
    space = image_editor()
    state = bpy.context.window_manager.render_farm_job
    state.job_name, state.frames_total = "user Scene", 1
    state.frames.clear()
    still = write_frame(tmp_path / "still" / "000007.png", 7)
    addon.jobs.deliver_frame(bpy.context, state, FrameDone(7, still))
    assert space.image.source == "FILE" and Path(bpy.path.abspath(space.image.filepath)) == still
    scene.frame_set(1)  # a still shows whatever the playhead says
    assert_same_frame(pixels_of(space.image), still)


def test_frames_out_of_order_keep_the_list_and_the_sequence_in_frame_order(addon: ModuleType,
                                                                           scene: bpy.types.Scene,
                                                                           tmp_path: Path) -> None:
    space = image_editor()
    state = bpy.context.window_manager.render_farm_job
    state.job_name, state.frames_total = "user Scene", 3
    state.frames.clear()
    files = {frame: write_frame(tmp_path / "frames" / f"{frame:06d}.png", 10 + frame) for frame in (1, 2, 3)}
    for frame in (3, 1):  # a retried tile held frame 2 back
        addon.jobs.deliver_frame(bpy.context, state, FrameDone(frame, files[frame]))
    user = space.image_user
    assert (user.frame_start, user.frame_offset, user.frame_duration) == (1, 0, 3)
    scene.frame_set(2)
    assert user.frame_current == 2 and space.image.filepath_from_user(image_user=user) == str(files[2])
    files[2].rename(files[2].with_suffix(".later"))
    with pytest.raises(RuntimeError, match="failed to load"):  # Blender looks for frame 2, which is not there
        shown_pixels(space)
    files[2].with_suffix(".later").rename(files[2])
    addon.jobs.deliver_frame(bpy.context, state, FrameDone(2, files[2]))
    assert [item.frame for item in state.frames] == [1, 2, 3]
    for frame in (1, 2, 3):
        scene.frame_set(frame)
        assert_same_frame(shown_pixels(space), files[frame])
    still = addon.images.load_still(files[1])  # the file that names the sequence, as a still of its own
    assert still.source == "FILE" and still != space.image


def test_the_bar_counts_frames_with_the_eta_through_the_merge(addon: ModuleType) -> None:
    state = bpy.context.window_manager.render_farm_job
    addon.jobs._apply(bpy.context, state, ProgressUpdate(Progress("merger", tiles_done=40, tiles_total=40,
                                                                      frames_merged=3, frames_total=10,
                                                                      eta_seconds=125.4)))
    assert addon.panels.progress_text(state) == "3/10 frames, 2:05 left"
    addon.jobs._apply(bpy.context, state, ProgressUpdate(Progress("renderer", tiles_done=4, tiles_total=40,
                                                                      frames_total=10)))
    assert addon.panels.progress_text(state) == "0/10 frames"
    state.eta_seconds = 3725
    assert addon.panels.progress_text(state) == "0/10 frames, 1:02:05 left"


def test_a_farm_job_delivers_frames_into_the_sequence_while_it_runs(addon: ModuleType, scene: bpy.types.Scene,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The real local farm, driven by the add-on's timer by hand: frame 1 is in the Image Editor's
    sequence while frames are still being merged, and at the end scene frame N shows frame N's file."""
    seen = []
    apply = addon.jobs._apply

    def recording_apply(context, state, event):  # the real handler, noting what the panel knew at each event
        apply(context, state, event)
        seen.append((type(event).__name__, state.frames_merged, state.frames_total, len(state.frames)))

    monkeypatch.setattr(addon.jobs, "_apply", recording_apply)
    scene.frame_end = 3
    scene.frame_set(1)
    farm = scene.render_farm
    farm.tile_size, farm.tile_width, farm.tile_height = "CUSTOM", 32, 24
    space = image_editor()
    started = time.monotonic()
    assert bpy.ops.farm.render_to_farm() == {"FINISHED"}
    job = bpy.context.window_manager.render_farm_job
    while addon.jobs.timer() is not None:
        assert time.monotonic() - started < 300
        time.sleep(0.05)
    bpy.app.timers.unregister(addon.jobs.timer)
    print(f"3 frames x 4 tiles into a sequence: {time.monotonic() - started:.1f} s")

    assert job.state == "FINISHED", job.message
    first = next(entry for entry in seen if entry[0] == FrameDone.__name__)
    assert first[1] < first[2] == 3, f"frame 1 came only once every frame was merged: {seen}"
    assert seen[-1][0] == Done.__name__
    out = Path(farm.output_folder)
    assert [item.frame for item in job.frames] == [1, 2, 3]
    assert space.image.source == "SEQUENCE" and space.image_user.frame_duration == 3
    for frame in (1, 2, 3):
        scene.frame_set(frame)
        assert space.image_user.frame_current == frame
        assert_same_frame(shown_pixels(space), out / f"{frame:06d}.png")


SEQUENCE_SCENE = {"size": [48, 32], "samples": 4, "frames": [1, 3]}  # first and last frame


def test_the_editor_shows_frame_n_at_scene_frame_n_in_real_blender(tmp_path: Path) -> None:
    """Debian's Blender 5.2 with its UI under Xvfb: Render to Farm by menu search on a 3-frame scene;
    after the job, the session sets each scene frame, lets the Image Editor draw, and reads the image's
    pixels, which must be the frame's file (``gui_session.py sequence``)."""
    import debian_root
    from test_real_blender import BUILD_SCENE, linux_zip, run_in_root
    from test_real_blender import SCENE as REAL_SCENE

    root = debian_root.ensure("sid")
    archive = linux_zip()
    for name in ("home", "out", "shots"):
        (tmp_path / name).mkdir()
    scene_file, report = tmp_path / "scene.blend", tmp_path / "report.json"
    build = BUILD_SCENE.replace(repr(REAL_SCENE), repr(SEQUENCE_SCENE))
    assert build != BUILD_SCENE
    q = shlex.quote
    log = tmp_path / "gui.log"
    script = f"""
blender -b -c extension install-file -r user_default --enable {q(str(archive))} > {q(str(log))} 2>&1
blender -b --factory-startup --python-expr {q(build)} -- {q(str(scene_file))} >> {q(str(log))} 2>&1
test -s {q(str(scene_file))} || {{ echo "the test scene was not built"; cat {q(str(log))}; exit 1; }}
Xvfb :92 -screen 0 1024x768x24 -nolisten tcp -fbdir {q(str(tmp_path / 'shots'))} > /dev/null 2>&1 &
for _ in $(seq 100); do [ -S /tmp/.X11-unix/X92 ] && break; sleep 0.1; done
DISPLAY=:92 blender --enable-event-simulate -p 0 0 1024 768 {q(str(scene_file))} \
    --python {q(str(ROOT / 'tests' / 'gui_session.py'))} -- sequence {q(str(report))} {q(str(tmp_path / 'out'))} \
    {q(str(tmp_path / 'shots'))} >> {q(str(log))} 2>&1 || echo "exit code $?" >> {q(str(log))}
"""
    started = time.monotonic()
    done = run_in_root(root, script, tmp_path, 300, archive.parent)
    print(f"real Blender: install, 3-frame farm job, scrub: {time.monotonic() - started:.1f} s")
    log = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    assert done.returncode == 0 and report.exists(), f"{done.stderr}\n{log}"
    seen = json.loads(report.read_text())
    assert seen["error"] is None, seen["error"] + log
    print(f"inside Blender, seconds from the first timer step: {seen['timeline']}")
    job = seen["jobs"][0]
    assert job["state"] == "FINISHED", job["message"]
    assert job["sequence_while_running"], "no frame reached the Image Editor before the job ended"
    assert job["source"] == "SEQUENCE" and job["frame_duration"] == 3
    files = [file_pixels(tmp_path / "out" / f"{frame:06d}.png") for frame in (1, 2, 3)]
    assert not np.array_equal(files[0], files[1]) and not np.array_equal(files[1], files[2]), "frames must differ"
    for frame in ("1", "2", "3"):
        shown = job["scrubbed"][frame]
        assert shown["image_frame"] == int(frame)
        assert shown["file"] == str(tmp_path / "out" / f"{int(frame):06d}.png")
        pixels = np.array(shown["pixels"], np.float32).reshape(SEQUENCE_SCENE["size"][1], SEQUENCE_SCENE["size"][0], 4)
        np.testing.assert_allclose(pixels, file_pixels(tmp_path / "out" / f"{int(frame):06d}.png"), atol=1e-6)
    assert job["scrubbed"]["5"]["image_frame"] == 3, "past the end the editor holds the newest frame"
