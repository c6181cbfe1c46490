"""Drive a real Blender's UI as an artist would: run inside it with ``--enable-event-simulate``.

``blender --enable-event-simulate scene.blend --python tests/gui_session.py -- REPORT.json OUT1 OUT2 SHOTS``
(``-- sequence REPORT.json OUT SHOTS``: one job, then its frames scrubbed on the timeline)

Blender's own UI tests drive the UI the same way: a timer steps through a
generator, and keyboard input goes through ``Window.event_simulate``, so the
events take Blender's real path (keymaps, menu search, operator invoke, the
add-on's own ``bpy.app.timers`` callback). Nothing here calls the add-on's
operators or its timer directly: jobs start and stop through the Render menu,
found with F3 menu search as a user finds it. What the session saw goes to
REPORT.json for the test to judge; screenshots go to SHOTS.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import bpy

ARGS = sys.argv[sys.argv.index("--") + 1:]
SEQUENCE = ARGS[:1] == ["sequence"]  # ``-- sequence REPORT OUT SHOTS``: one short job, then scrub its frames
if SEQUENCE:
    REPORT, OUT_FINISHED, SHOTS = ARGS[1:4]
else:
    REPORT, OUT_FINISHED, OUT_CANCELLED, SHOTS = ARGS[:4]
ADDON = "bl_ext.user_default.pachyderm_farm"
LIMIT_S = 300  # the whole session; the test's own timeout is longer

report: dict = {"jobs": [], "error": None}


def window() -> bpy.types.Window:
    return bpy.context.window_manager.windows[0]


def area_of(kind: str) -> bpy.types.Area | None:
    return next((area for area in window().screen.areas if area.type == kind), None)


def press(kind: str, unicode: str | None = None, **modifiers) -> None:
    extra = {"unicode": unicode} if unicode else {}
    window().event_simulate(type=kind, value="PRESS", **extra, **modifiers)
    window().event_simulate(type=kind, value="RELEASE", **modifiers)


def type_text(text: str) -> None:
    for char in text:
        press("SPACE" if char == " " else char.upper(), unicode=char)


def menu_search(label: str):
    """F3, type the menu item's label, Enter: one timer step between each, as a person types."""
    target = area_of("IMAGE_EDITOR")
    window().event_simulate(type="MOUSEMOVE", value="NOTHING", x=target.x + target.width // 2,
                            y=target.y + target.height // 2)
    yield 0.3
    press("F3")
    yield 0.5
    type_text(label)
    yield 0.8
    press("RET")
    yield 0.3


def screenshot(name: str) -> None:
    """Copy the X server's framebuffer as it is now (Xvfb ``-fbdir`` keeps it in an XWD file).

    Blender's own ``screen.screenshot`` reads back an OpenGL buffer, which is black under Xvfb.
    """
    with open(os.path.join(SHOTS, "Xvfb_screen0"), "rb") as screen:
        pixels = screen.read()
    path = os.path.join(SHOTS, name + ".xwd")
    with open(path, "wb") as shot:
        shot.write(pixels)
    report.setdefault("screenshots", []).append(path)


def job_state():
    return bpy.context.window_manager.render_farm_job


def blender_children() -> list[str]:
    """Processes descended from this Blender: the farm's workers, if any are left."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)
            names[int(entry)] = fields[0].split("(", 1)[1]
            parents[int(entry)] = int(fields[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    mine, found = {os.getpid()}, True
    while found:
        found = False
        for pid, parent in parents.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                found = True
    return [f"{pid} {names[pid]}" for pid in sorted(mine - {os.getpid()})]


def watch(job: dict, cancel_after_tiles: int | None):
    """Sample the add-on's job state on every step until the job ends; optionally cancel mid-job."""
    state = job_state()
    started = time.monotonic()
    shot_taken = False
    cancel_sent = False
    while state.state in ("IDLE",) and time.monotonic() - started < 10:
        yield 0.1  # the operator has not run yet
    while state.state == "RUNNING":
        job["samples"].append({"t": round(time.monotonic() - started, 2), "fraction": state.fraction,
                               "tiles_done": state.tiles_done, "tiles_total": state.tiles_total,
                               "frames_merged": state.frames_merged, "message": state.message})
        if not shot_taken and 0 < state.fraction < 1 and cancel_after_tiles is None:
            screenshot("progress")
            shot_taken = True
        if cancel_after_tiles is not None and not cancel_sent and state.tiles_done >= cancel_after_tiles:
            job["cancelled_at_tiles"] = state.tiles_done
            cancel_sent = True
            yield from menu_search("cancel farm job")
            continue
        shown = area_of("IMAGE_EDITOR").spaces.active.image
        if shown is not None and shown.source == "SEQUENCE" and len(state.frames):
            job["sequence_while_running"] = True  # a frame reached the editor before the job ended
        if time.monotonic() - started > LIMIT_S / 2:
            raise TimeoutError(f"job still running after {LIMIT_S / 2} s: {state.message}")
        yield 0.1
    job["state"], job["message"] = state.state, state.message
    job["warnings"] = state.warnings


def images_report() -> dict:
    """The images Blender holds and the one the Image Editor shows. A job's frames are one image
    sequence: each delivered frame is listed as ``<image> #<frame>``, and the shown one is the frame
    the editor's image user points at, its file as Blender resolves it."""
    editor = area_of("IMAGE_EDITOR")
    space = editor.spaces.active if editor else None
    shown = space.image if space else None
    images = {image.name: bpy.path.abspath(image.filepath) for image in bpy.data.images if image.source == "FILE"}
    for item in job_state().frames:
        if bpy.data.images[item.image].source == "SEQUENCE":
            images[f"{item.image} #{item.frame}"] = item.filepath
    name = shown.name if shown else None
    if shown is not None and shown.source == "SEQUENCE":
        name = f"{shown.name} #{space.image_user.frame_current}"
    return {"images": images, "shown": name,
            "shown_file": bpy.path.abspath(shown.filepath_from_user(image_user=space.image_user)) if shown else None,
            "shown_size": list(shown.size) if shown else None,
            "frames": [(item.frame, item.filepath, item.image) for item in job_state().frames]}


def session():
    yield 1.0  # let the window draw once
    # An artist's layout: the Properties editor on its Render tab, large enough to read in the
    # screenshots, and an Image Editor beside it for the frames.
    small, large = area_of("PROPERTIES"), area_of("VIEW_3D")
    small.type = "IMAGE_EDITOR"
    large.type = "PROPERTIES"
    large.spaces.active.context = "RENDER"
    scene = bpy.context.scene
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.local_workers = 2
    report["extension_enabled"] = ADDON in bpy.context.preferences.addons
    report["blender"] = bpy.app.version_string
    report["binary"] = bpy.app.binary_path

    farm = scene.render_farm
    farm.tile_size, farm.tile_width, farm.tile_height = "CUSTOM", 32, 32
    farm.output_folder = OUT_FINISHED
    yield 0.5
    finished = {"samples": []}
    report["jobs"].append(finished)
    yield from menu_search("render to farm")
    yield from watch(finished, cancel_after_tiles=None)
    finished["children_after"] = blender_children()
    scene.frame_set(scene.frame_end)  # the artist goes to the last frame, which the editor then shows
    yield 1.0  # the Image Editor redraws with the last frame
    finished.update(images_report())
    screenshot("finished")

    # A second job, slow enough to be cancelled mid-way: many small tiles of many samples.
    # Its frames are not the plain render's, so the test checks what it leaves, not its pixels.
    farm.tile_width = farm.tile_height = 16
    scene.cycles.samples = 4096
    farm.output_folder = OUT_CANCELLED
    yield 0.5
    cancelled = {"samples": []}
    report["jobs"].append(cancelled)
    yield from menu_search("render to farm")
    yield from watch(cancelled, cancel_after_tiles=1)
    deadline = time.monotonic() + 15
    while blender_children() and time.monotonic() < deadline:
        yield 0.2
    cancelled["children_after"] = blender_children()


def sequence_session():
    """One 3-frame job into an Image Editor, then the playhead set to each frame (and past the end):
    what the editor's image user points at, and the image's pixels once the editor has drawn them."""
    began = time.monotonic()
    timeline = report.setdefault("timeline", {})
    yield 1.0
    timeline["window"] = round(time.monotonic() - began, 1)
    small, large = area_of("PROPERTIES"), area_of("VIEW_3D")
    small.type = "IMAGE_EDITOR"
    large.type = "PROPERTIES"
    large.spaces.active.context = "RENDER"
    scene = bpy.context.scene
    bpy.context.preferences.addons[ADDON].preferences.local_workers = 2
    report["blender"] = bpy.app.version_string
    farm = scene.render_farm
    farm.tile_size, farm.tile_width, farm.tile_height = "CUSTOM", 16, 16
    farm.output_folder = OUT_FINISHED
    scene.frame_set(scene.frame_start)
    yield 0.5
    job = {"samples": [], "sequence_while_running": False}
    report["jobs"].append(job)
    timeline["layout"] = round(time.monotonic() - began, 1)
    yield from menu_search("render to farm")
    timeline["submitted"] = round(time.monotonic() - began, 1)
    yield from watch(job, cancel_after_tiles=None)
    timeline["finished"] = round(time.monotonic() - began, 1)
    yield 1.0
    editor = area_of("IMAGE_EDITOR")
    space = editor.spaces.active
    job["source"] = space.image.source if space.image else None
    job["frame_duration"] = space.image_user.frame_duration
    job["scrubbed"] = {}
    for frame in (1, 2, 3, 5):
        scene.frame_set(frame)
        editor.tag_redraw()
        yield 0.5  # the editor draws, which loads the frame its image user points at
        image = space.image
        job["scrubbed"][str(frame)] = {"image_frame": space.image_user.frame_current,
                                       "file": bpy.path.abspath(image.filepath_from_user(image_user=space.image_user)),
                                       "pixels": [round(value, 6) for value in image.pixels[:]]}
    timeline["scrubbed"] = round(time.monotonic() - began, 1)
    screenshot("sequence")


def run_session() -> None:
    steps = sequence_session() if SEQUENCE else session()
    started = time.monotonic()

    def step() -> float | None:
        try:
            if time.monotonic() - started > LIMIT_S:
                raise TimeoutError(f"the GUI session took more than {LIMIT_S} s")
            return next(steps)
        except StopIteration:
            pass
        except Exception:
            report["error"] = traceback.format_exc()
        with open(REPORT + ".partial", "w") as handle:
            json.dump(report, handle, indent=1)
        os.replace(REPORT + ".partial", REPORT)
        with bpy.context.temp_override(window=window()):
            bpy.ops.wm.quit_blender()
        return None

    bpy.app.timers.register(step, first_interval=1.0)


run_session()
