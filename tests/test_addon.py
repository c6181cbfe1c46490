"""The add-on as a user gets it: installed from the built zip into Blender (bpy), driven through its operators.

Timers never fire in the bpy module, so the asynchronous path is driven by calling
the add-on's timer callback by hand, exactly as Blender's event loop would.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import bpy
import numpy as np
import pytest
from test_extension import build_extension

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
import cv2  # noqa: E402

MODULE = "bl_ext.farm_test.pachyderm_farm"
TOKEN = "pachyderm-token-4f1c9e27-do-not-leak"


class Call(tuple):
    """``(method, args, kwargs)`` of one drawing call, and whether Blender draws it red (``alert`` set on its
    layout or on one around it)."""

    alert: bool


class RecordingLayout:
    """Stands in for ``UILayout``: records each call, checked against the real UILayout's RNA.

    Methods, keyword arguments, icons, attributes and drawn properties must all
    exist, so a typo fails here as it would fail in Blender's UI.
    """

    _RNA = bpy.types.UILayout.bl_rna

    def __init__(self, calls: list[Call], parent: RecordingLayout | None = None) -> None:
        object.__setattr__(self, "calls", calls)
        object.__setattr__(self, "parent", parent)

    def __setattr__(self, name: str, value) -> None:
        assert name in self._RNA.properties, f"UILayout has no attribute {name!r}"
        object.__setattr__(self, name, value)

    def __getattr__(self, method: str):
        if method in self._RNA.properties:  # read before it was set, as Blender's menus read operator_context
            return self._RNA.properties[method].default
        assert method in self._RNA.functions, f"UILayout has no method {method!r}"
        parameters = self._RNA.functions[method].parameters

        def record(*args, **kwargs):
            assert set(kwargs) <= set(parameters.keys()), f"{method}: unknown arguments {set(kwargs)}"
            if "icon" in kwargs:
                assert kwargs["icon"] in parameters["icon"].enum_items.keys(), kwargs["icon"]
            if method == "prop":
                data, name = args[:2]
                assert name in data.bl_rna.properties, f"{data!r} has no property {name!r}"
            if method == "operator":
                category, name = args[0].split(".")
                assert hasattr(getattr(bpy.ops, category), name), args[0]
            call = Call((method, args, kwargs))
            call.alert = self._alerted()
            self.calls.append(call)
            if method == "operator":
                return SimpleNamespace()  # the operator's properties, which menus set
            return RecordingLayout(self.calls, self) if method in ("row", "column", "box", "split") else None

        return record

    def _alerted(self) -> bool:
        layout = self
        while layout is not None:
            if layout.__dict__.get("alert"):
                return True
            layout = layout.parent
        return False


def draw_panel() -> list[Call]:
    calls: list[Call] = []
    bpy.types.RENDER_PT_farm.draw(SimpleNamespace(layout=RecordingLayout(calls)), bpy.context)
    return calls


def drawn_prop(calls: list[Call], name: str) -> Call:
    return next(call for call in calls if call[0] == "prop" and call[1][1] == name)


def texts(calls: list[Call], method: str) -> list[str]:
    return [kwargs.get("text", "") for name, _, kwargs in calls if name == method]


@pytest.fixture(scope="module")
def addon(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """Install and enable the built zip in a throw-away repository; wheels and farm state go to temp too."""
    tmp = tmp_path_factory.mktemp("addon")
    archive = build_extension()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BLENDER_USER_EXTENSIONS", str(tmp / "extensions"))
        env.setenv("FARM_STATE_DIR", str(tmp / "state"))
        repos = bpy.context.preferences.extensions.repos
        repo = repos.new(name="Farm Test", module="farm_test", custom_directory=str(tmp / "repo"), source="USER")
        result = bpy.ops.extensions.package_install_files(filepath=str(archive), repo="farm_test",
                                                          enable_on_install=True)
        assert result == {"FINISHED"}
        assert MODULE in bpy.context.preferences.addons
        module = importlib.import_module(MODULE)
        module.preferences.get(bpy.context).token = TOKEN
        yield module
        repos.remove(repo)  # disables the add-on, which cancels any job and removes its timer
        assert MODULE not in bpy.context.preferences.addons


@pytest.fixture
def scene(addon: ModuleType, tmp_path: Path) -> bpy.types.Scene:
    """A saved 64x48 Cycles scene with a moving cube, then an unsaved change: the second frame."""
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 2
    scene.cycles.device = "CPU"
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 48, 100
    scene.frame_start = scene.frame_end = 1
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.location, camera.rotation_euler = (0, -6, 1), (1.45, 0, 0)
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.collection.objects.link(bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN")))
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.object
    for frame, x in ((1, -1.0), (2, 1.0)):
        cube.location.x = x
        cube.keyframe_insert("location", frame=frame)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "user.blend"))
    scene.frame_end = 2  # unsaved: the farm must still render frame 2
    scene.render_farm.output_folder = str(tmp_path / "frames")
    return scene


def pixels_of(image: bpy.types.Image) -> np.ndarray:
    width, height = image.size
    buffer = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(buffer)
    return buffer.reshape(height, width, 4)


def frame_pixels(image: bpy.types.Image, frame: int) -> np.ndarray:
    """Frame ``frame`` of a job's image (a sequence, or a still), read through Blender. The bpy module
    never draws an Image Editor, whose draw loads the frame it shows, so the frame is loaded by hand:
    ``Image.scale`` to its own size reads file ``frame`` of the sequence."""
    if image.source == "SEQUENCE":
        height, width = cv2.imread(bpy.path.abspath(image.filepath), cv2.IMREAD_UNCHANGED).shape[:2]
        image.scale(width, height, frame=frame)
    return pixels_of(image)


def file_pixels(path: Path) -> np.ndarray:
    """The file's pixels as Blender holds them: RGBA floats, bottom row first."""
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(data.dtype, 1.0)
    rgba = cv2.cvtColor(data, cv2.COLOR_BGRA2RGBA if data.shape[2] == 4 else cv2.COLOR_BGR2RGBA)
    return np.flipud(rgba.astype(np.float32) / scale)


def assert_frames_loaded(job, out_dir: Path, size: tuple[int, int]) -> None:
    """Every frame of the job is a frame of its image sequence in bpy.data.images, the right size,
    with exactly the file's pixels."""
    assert [item.frame for item in job.frames] == [1, 2]
    assert len({item.image for item in job.frames}) == 1, "one image sequence per job"
    for item in job.frames:
        path = Path(item.filepath)
        assert path.parent == out_dir and path.is_file()
        image = bpy.data.images[item.image]
        assert image.source == "SEQUENCE"
        pixels = frame_pixels(image, item.frame)
        assert tuple(image.size) == size
        np.testing.assert_allclose(pixels, file_pixels(path), atol=1e-6)


@pytest.fixture
def online_access(request: pytest.FixtureRequest) -> bool:
    """Blender's "Allow Online Access" preference, set for one test; Blender reads it at once."""
    system = bpy.context.preferences.system
    before = system.use_online_access
    system.use_online_access = request.param
    assert bpy.app.online_access == request.param
    yield request.param
    system.use_online_access = before


@pytest.mark.parametrize("online_access", [False], indirect=True)  # the local farm needs no network
def test_render_with_wait_loads_frames_and_leaves_the_session_alone(addon: ModuleType, scene: bpy.types.Scene,
                                                                    online_access: bool) -> None:
    render = scene.render
    render.use_border, render.use_crop_to_border = True, False
    render.border_min_x, render.border_max_x, render.border_min_y, render.border_max_y = 0.25, 0.75, 0.25, 0.75
    scene.render_farm.tile_size = "CPU_16"
    missing = bpy.data.images.new("Gone", 4, 4)
    missing.source, missing.filepath, missing.use_fake_user = "FILE", "//textures/gone.png", True
    filepath, dirty = bpy.data.filepath, bpy.data.is_dirty

    started = time.monotonic()
    assert bpy.ops.farm.render_to_farm(wait=True) == {"FINISHED"}
    print(f"2 frames x 4 tiles through the add-on: {time.monotonic() - started:.1f} s")

    assert (bpy.data.filepath, bpy.data.is_dirty) == (filepath, dirty)
    for packed in Path(os.environ["FARM_STATE_DIR"]).rglob("*.blend"):
        assert TOKEN.encode() not in packed.read_bytes(), packed
    job = bpy.context.window_manager.render_farm_job
    assert job.state == "FINISHED", job.message
    assert (job.tiles_done, job.tiles_total, job.frames_merged, job.fraction) == (8, 8, 2, 1.0)
    out_dir = Path(scene.render_farm.output_folder)
    assert_frames_loaded(job, out_dir, (64, 48))
    alpha = frame_pixels(bpy.data.images[job.frames[0].image], 1)[..., 3]
    assert not alpha[:12].any() and alpha[12:36, 16:48].all(), "only the render region is rendered"

    assert "gone.png" in job.warnings
    calls = draw_panel()
    assert any("gone.png" in text for text in texts(calls, "label"))
    assert "Render to Farm" in [kwargs.get("text", "Render to Farm") for name, args, kwargs in calls
                                if name == "operator" and args[0] == "farm.render_to_farm"]
    assert any(name == "template_list" and args[0] == "FARM_UL_frames" for name, args, _ in calls)
    drawn = {args[1] for name, args, _ in calls if name == "prop"}
    assert {"overscan", "sample_chunks", "strict", "output_folder"} <= drawn


def test_timer_callback_drives_a_submitted_job(addon: ModuleType, scene: bpy.types.Scene) -> None:
    farm = scene.render_farm
    farm.tile_size, farm.tile_width, farm.tile_height = "CUSTOM", 40, 20
    farm.file_format = "OPEN_EXR"
    image_editor = bpy.context.window.screen.areas[0]
    image_editor.type = "IMAGE_EDITOR"

    assert bpy.ops.farm.render_to_farm() == {"FINISHED"}  # returns at once
    job = bpy.context.window_manager.render_farm_job
    assert job.state == "RUNNING"
    assert bpy.app.timers.is_registered(addon.jobs.timer)
    assert not bpy.ops.farm.render_to_farm.poll(), "one job at a time"
    calls = draw_panel()
    assert any(name == "progress" for name, _, _ in calls)
    assert any(name == "operator" and args[0] == "farm.cancel_job" for name, args, _ in calls)

    bars = []
    deadline = time.monotonic() + 300
    while (interval := addon.jobs.timer()) is not None:
        assert interval > 0 and time.monotonic() < deadline
        bars += [kwargs["text"] for name, _, kwargs in draw_panel() if name == "progress"]
        time.sleep(0.05)
    bpy.app.timers.unregister(addon.jobs.timer)  # Blender would have dropped it when it returned None

    assert job.state == "FINISHED", job.message
    assert any(text.endswith(" frames") or " frames, " in text for text in bars), bars
    assert (job.tiles_done, job.frames_merged) == (2 * 2 * 3, 2)
    assert_frames_loaded(job, Path(farm.output_folder), (64, 48))
    assert all(item.filepath.endswith(".exr") for item in job.frames)
    assert image_editor.spaces.active.image == bpy.data.images[job.frames[-1].image]


def test_errors_reach_the_panel_and_the_report(addon: ModuleType, scene: bpy.types.Scene, tmp_path: Path) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    scene.render_farm.output_folder = str(blocker)
    with pytest.raises(RuntimeError, match="not a directory"):
        bpy.ops.farm.render_to_farm(wait=True)
    job = bpy.context.window_manager.render_farm_job
    assert job.state == "FAILED" and "not a directory" in job.message
    assert any("not a directory" in text for text in texts(draw_panel(), "label"))

    scene.camera = None
    with pytest.raises(RuntimeError, match="no active camera"):
        bpy.ops.farm.render_to_farm(wait=True)


@pytest.mark.parametrize("online_access", [True], indirect=True)
def test_unreachable_pachyderm_is_an_error_not_a_traceback(addon: ModuleType, scene: bpy.types.Scene,
                                                           online_access: bool) -> None:
    prefs = addon.preferences.get(bpy.context)
    address = prefs.address
    prefs.address = "127.0.0.1:9"
    scene.render_farm.backend = "PACHYDERM"
    try:
        assert "Cluster: 127.0.0.1:9" in texts(draw_panel(), "label")
        with pytest.raises(RuntimeError) as raised:
            bpy.ops.farm.render_to_farm(wait=True)
    finally:
        prefs.address = address
    message = bpy.context.window_manager.render_farm_job.message
    assert "127.0.0.1" in message and "unexpected" not in message, message
    assert message in str(raised.value)


def test_token_stays_out_of_blend_files(addon: ModuleType, scene: bpy.types.Scene, tmp_path: Path) -> None:
    """Neither the user's saved file nor the copy sent to the farm holds the token."""
    assert addon.preferences.get(bpy.context).token == TOKEN
    saved = tmp_path / "saved.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(saved), copy=True, compress=False)
    sent = addon.submit.save_copy("token-check")
    try:
        for blend in (saved, sent):
            assert TOKEN.encode() not in blend.read_bytes(), blend
    finally:
        sent.unlink()


def test_missing_dependencies_are_named(addon: ModuleType, scene: bpy.types.Scene, monkeypatch: pytest.MonkeyPatch,
                                        capfd: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # what a failed wheel install looks like to Python
    bpy.ops.preferences.addon_disable(module=MODULE)
    bpy.ops.preferences.addon_enable(module=MODULE)
    assert "opencv-python-headless" in capfd.readouterr().err
    assert any("opencv-python-headless" in text for text in texts(draw_panel(), "label"))
    with pytest.raises(RuntimeError, match="opencv-python-headless"):
        bpy.ops.farm.render_to_farm(wait=True)
    scene.render_farm.backend = "PACHYDERM"
    assert addon.dependencies.missing("PACHYDERM") == (), "a cluster's client needs no OpenCV"
    job_message = bpy.context.window_manager.render_farm_job.message
    assert [text for text in texts(draw_panel(), "label") if "opencv" in text] == [job_message], \
        "the panel warns no more; only the failed job's message names it"

    monkeypatch.undo()  # the wheel is back: enabling again finds it
    bpy.ops.preferences.addon_disable(module=MODULE)
    bpy.ops.preferences.addon_enable(module=MODULE)
    assert addon.dependencies.missing() == ()


def test_preferences_draw_every_setting(addon: ModuleType) -> None:
    prefs = addon.preferences.get(bpy.context)
    calls: list[Call] = []

    class Drawn:  # the preferences, with a recording layout
        layout = RecordingLayout(calls)

        def __getattr__(self, name: str):
            return getattr(prefs, name)

    type(prefs).draw(Drawn(), bpy.context)
    drawn = {args[1] for name, args, _ in calls if name == "prop"}
    assert drawn == {"address", "token", "use_tls", "local_workers", "gpu_backend", "default_tile"}
    assert prefs.bl_rna.properties["token"].subtype == "PASSWORD"


def test_the_local_farm_takes_the_gpu_backend_blender_is_set_to(addon: ModuleType) -> None:
    """Farm workers start from factory preferences; "As in Blender" hands them the user's Cycles device type."""
    prefs = addon.preferences.get(bpy.context)
    cycles = bpy.context.preferences.addons["cycles"].preferences
    before = (prefs.gpu_backend, cycles.compute_device_type)
    try:
        prefs.gpu_backend = "BLENDER"
        cycles.compute_device_type = "CUDA"
        assert addon.preferences.gpu_backend(bpy.context) == "CUDA"
        cycles.compute_device_type = "NONE"
        assert addon.preferences.gpu_backend(bpy.context) == "auto"
        for chosen, passed in (("AUTO", "auto"), ("OPTIX", "OPTIX"), ("CPU", "CPU")):
            prefs.gpu_backend = chosen
            assert addon.preferences.gpu_backend(bpy.context) == passed
    finally:
        prefs.gpu_backend, cycles.compute_device_type = before


def test_panel_shows_what_an_artist_needs_and_the_job_gets_the_cli_settings(
        addon: ModuleType, scene: bpy.types.Scene, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture) -> None:
    """Auto's tile size, then the outcome, in the panel; the farm's internals on the console only.
    Overscan and sample chunks reach the farm's job.json, and the frames stay those of the files."""
    messages = []
    apply = addon.jobs._apply

    def recording_apply(context, state, event):  # the real handler, with every message it sets noted
        apply(context, state, event)
        messages.append(state.message)

    monkeypatch.setattr(addon.jobs, "_apply", recording_apply)
    farm = scene.render_farm
    farm.tile_size, farm.overscan, farm.sample_chunks = "AUTO", 3, 2
    assert bpy.ops.farm.render_to_farm() == {"FINISHED"}
    job = bpy.context.window_manager.render_farm_job
    deadline = time.monotonic() + 300
    while addon.jobs.timer() is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    bpy.app.timers.unregister(addon.jobs.timer)

    assert job.state == "FINISHED", job.message
    assert any(m.startswith("tile size auto:") for m in messages), messages
    assert not any("datum" in m for m in messages), messages
    assert job.message == f"2 frame(s) in {farm.output_folder}"
    assert "farm: renderer: " in capfd.readouterr().err, "the farm's internals still reach the console"
    assert job.tiles_total > 0 and job.frames_merged == 2
    assert_frames_loaded(job, Path(farm.output_folder), (64, 48))
    sent = max(Path(os.environ["FARM_STATE_DIR"]).glob("prepared/*/job.json"), key=lambda path: path.stat().st_mtime)
    settings = json.loads(sent.read_text())["settings"]
    assert (settings["overscan"], settings["sample_chunks"], settings["strict"]) == (3, 2, False)


def test_strict_refuses_a_scene_with_missing_files(addon: ModuleType, scene: bpy.types.Scene) -> None:
    missing = bpy.data.images.new("Gone", 4, 4)
    missing.source, missing.filepath, missing.use_fake_user = "FILE", "//textures/gone.png", True
    scene.render_farm.strict = True
    with pytest.raises(RuntimeError, match="missing files: .*gone.png"):
        bpy.ops.farm.render_to_farm(wait=True)
    assert bpy.context.window_manager.render_farm_job.state == "FAILED"
    assert not Path(scene.render_farm.output_folder).exists(), "refused before anything is written"


def test_output_folder_is_red_only_when_it_cannot_be_used(addon: ModuleType, scene: bpy.types.Scene,
                                                          tmp_path: Path) -> None:
    # Blender draws a folder red when it starts with '//' unless the property says it supports that.
    assert scene.render_farm.bl_rna.properties["output_folder"].is_path_supports_blend_relative
    farm = scene.render_farm
    farm.output_folder = "//render_farm/"  # the default, beside the saved user.blend
    assert not drawn_prop(draw_panel(), "output_folder").alert
    (tmp_path / "render_farm").mkdir()
    assert not drawn_prop(draw_panel(), "output_folder").alert
    farm.output_folder = str(tmp_path / "not yet")  # made when the first frame is written
    assert not drawn_prop(draw_panel(), "output_folder").alert

    bpy.ops.wm.read_homefile(use_empty=True)  # a new file, never saved: '//' has no folder to mean
    scene = bpy.context.scene
    scene.camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(scene.camera)
    assert scene.render_farm.output_folder == "//render_farm/"
    assert drawn_prop(draw_panel(), "output_folder").alert
    with pytest.raises(RuntimeError, match="not saved yet"):
        bpy.ops.farm.render_to_farm(wait=True)


@pytest.mark.parametrize("online_access", [False], indirect=True)
def test_pachyderm_needs_online_access_and_says_where_to_allow_it(addon: ModuleType, scene: bpy.types.Scene,
                                                                  online_access: bool) -> None:
    scene.render_farm.backend = "PACHYDERM"
    with pytest.raises(RuntimeError, match="Preferences > System > Network"):
        bpy.ops.farm.render_to_farm(wait=True)
    job = bpy.context.window_manager.render_farm_job
    assert job.state == "FAILED"
    assert [text for text in texts(draw_panel(), "label") if "online access" in text] == [job.message]


def test_panel_sits_under_render_engine(addon: ModuleType) -> None:
    """Blender draws the header-less panel holding Render Engine first (it is inserted before every panel
    with a header) and a sub-panel with its parent, so the farm comes before Cycles' Sampling and the rest."""
    parent = bpy.types.RENDER_PT_context
    assert parent.bl_context == "render" and "HIDE_HEADER" in parent.bl_options
    assert bpy.types.RENDER_PT_farm.bl_parent_id == "RENDER_PT_context"
    assert bpy.types.RENDER_PT_farm.bl_context == parent.bl_context
    calls: list[Call] = []
    parent.draw(SimpleNamespace(layout=RecordingLayout(calls)), bpy.context)
    assert ("engine",) in [args[1:2] for name, args, _ in calls if name == "prop"]


def test_render_menu_starts_and_cancels_the_job(addon: ModuleType, scene: bpy.types.Scene) -> None:
    """Topbar > Render holds the farm beside Render Image and Render Animation, with the labels F3 finds."""
    def menu_entries() -> list[tuple[str, str]]:
        calls: list[Call] = []
        bpy.types.TOPBAR_MT_render.draw(SimpleNamespace(layout=RecordingLayout(calls)), bpy.context)
        return [(args[0], kwargs.get("text")) for name, args, kwargs in calls if name == "operator"]

    assert menu_entries()[:4] == [("farm.render_to_farm", "Render to Farm"), ("farm.cancel_job", "Cancel Farm Job"),
                                  ("render.render", "Render Image"), ("render.render", "Render Animation")]
    assert (bpy.types.FARM_OT_render_to_farm.bl_label, bpy.types.FARM_OT_cancel_job.bl_label) == (
        "Render to Farm", "Cancel Farm Job")
    assert not bpy.ops.farm.cancel_job.poll(), "Cancel Farm Job is greyed out while no job runs"
    assert bpy.ops.farm.render_to_farm() == {"FINISHED"}
    assert bpy.ops.farm.cancel_job.poll()
    assert bpy.ops.farm.cancel_job() == {"FINISHED"}
    while addon.jobs.timer() is not None:
        time.sleep(0.05)
    bpy.app.timers.unregister(addon.jobs.timer)
    assert bpy.context.window_manager.render_farm_job.state == "CANCELLED"
    assert not bpy.ops.farm.cancel_job.poll()
