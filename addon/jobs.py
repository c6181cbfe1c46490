"""The running farm job: a background thread does the farm's file and network work, the main thread shows it.

The thread never touches bpy. It puts the farm's events (one dataclass per kind,
``farm_pipelines.events``) on a ``queue.Queue``; ``drain`` applies them to
``window_manager.render_farm_job`` and loads finished frames, on the main thread.
The panel shows what an artist needs (the tile size Auto chose, warnings, the
outcome); how the farm goes about the job goes to the system console. In Blender
a ``bpy.app.timers`` callback (``timer``) calls ``drain``; ``wait`` calls it in a
loop for scripts, and tests call ``timer`` by hand.
"""

from __future__ import annotations

import queue
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

import bpy

from farm_pipelines.errors import BadInput, FarmFailure
from farm_pipelines.events import Caution, Detail, Done, FarmEvent, FrameDone, Info, ProgressUpdate

from . import dependencies, images
from .properties import FarmJobState
from .submit import Submission

TIMER_INTERVAL = 0.25  # seconds; often enough for a smooth bar, rare enough to cost nothing
PREPARING = "Preparing the scene..."


@dataclass(frozen=True)
class Finished:
    """The last message of a job's thread."""

    error: str | None
    cancelled: bool


class FarmJob:
    def __init__(self, submission: Submission) -> None:
        self.submission = submission
        self.events: queue.Queue[FarmEvent | Finished] = queue.Queue()
        self.cancel = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pachyderm-farm-job", daemon=True)

    def _run(self) -> None:
        error = None
        try:
            self._render()
        except (BadInput, FarmFailure) as failure:
            error = str(failure)
        except Exception as failure:  # the panel must say something, whatever went wrong
            traceback.print_exc(file=sys.stderr)
            error = _unexpected(failure)
        finally:
            self.submission.blend.unlink(missing_ok=True)
            self.events.put(Finished(error, self.cancel.is_set()))

    def _render(self) -> None:
        # Imported here, once a job runs and off the main thread: grpc, OpenCV and python-pachyderm take
        # a while to load and the panel never needs them.
        from farm_pipelines.pachyderm import PachydermBackend
        from farm_pipelines.submission import render

        sub = self.submission
        backend = None
        if sub.pachyderm is not None:
            backend = PachydermBackend(sub.pachyderm.address, sub.pachyderm.token, sub.pachyderm.tls,
                                       log=lambda message: self.events.put(Detail(message)),
                                       warn=lambda message: self.events.put(Caution(message)))
        render(sub.blend, sub.settings, sub.out_dir, backend=backend, workers=sub.workers, host=sub.host,
               on_event=self.events.put, cancel=self.cancel, display_name=sub.display_name,
               gpu_backend=sub.gpu_backend, source_folder=sub.source_folder)


def _unexpected(failure: Exception) -> str:
    """A wheel that is installed but does not load is named as a missing package; anything else is a bug."""
    package = dependencies.package_for(failure.name or "") if isinstance(failure, ImportError) else None
    if package is not None:
        return dependencies.message([package])
    return f"unexpected error: {failure!r} (details in the system console)"


_active: FarmJob | None = None


def running() -> bool:
    return _active is not None


def start(context: bpy.types.Context, submission: Submission) -> FarmJob:
    """Reset the job state and start the thread; the caller drives ``drain`` (timer or ``wait``)."""
    global _active
    state: FarmJobState = context.window_manager.render_farm_job
    state.state = "RUNNING"
    state.job_name = submission.display_name
    state.message = PREPARING
    state.warnings = ""
    state.fraction = 0.0
    state.tiles_done = state.tiles_total = state.frames_merged = state.frames_total = 0
    state.eta_seconds = -1.0
    state.frames.clear()
    state.active_frame = -1
    _active = FarmJob(submission)
    _active.thread.start()
    return _active


def drain(context: bpy.types.Context) -> bool:
    """Apply every queued event on the main thread; False once the job has finished (or there is none)."""
    global _active
    job = _active
    if job is None:
        return False
    state: FarmJobState = context.window_manager.render_farm_job
    while True:
        try:
            event = job.events.get_nowait()
        except queue.Empty:
            break
        if isinstance(event, Finished):
            _finish(state, event)
            _active = None
            break
        try:
            _apply(context, state, event)
        except Exception as error:  # e.g. a frame Blender cannot load: fail the job, never wedge the button
            job.cancel.set()
            _finish(state, Finished(f"{type(error).__name__}: {error}", cancelled=False))
            _active = None
            break
    _redraw_panel(context)
    return _active is job


def _apply(context: bpy.types.Context, state: FarmJobState, event: FarmEvent) -> None:
    if isinstance(event, ProgressUpdate):
        progress = event.progress
        state.fraction = progress.fraction
        state.tiles_done, state.tiles_total = progress.tiles_done, progress.tiles_total
        state.frames_merged, state.frames_total = progress.frames_merged, progress.frames_total
        state.eta_seconds = -1.0 if progress.eta_seconds is None else progress.eta_seconds
        if state.message == PREPARING:  # the bar says the rest
            state.message = ""
    elif isinstance(event, Info | Done):
        state.message = event.message
    elif isinstance(event, Detail):
        print(f"farm: {event.message}", file=sys.stderr)
    elif isinstance(event, FrameDone):
        deliver_frame(context, state, event)
    elif isinstance(event, Caution):
        print(f"warning: {event.message}", file=sys.stderr)
        state.warnings = "\n".join(filter(None, [state.warnings, event.message]))


def deliver_frame(context: bpy.types.Context, state: FarmJobState, event: FrameDone) -> None:
    """A frame the farm delivered, the first time or again (a re-render): listed once, in frame order,
    and shown in Blender at once (``images.deliver``)."""
    item = next((item for item in state.frames if item.frame == event.frame), None)
    if item is None:
        item = state.frames.add()
        item.frame = event.frame
        index = sorted(entry.frame for entry in state.frames).index(event.frame)
        state.frames.move(len(state.frames) - 1, index)
        item = state.frames[index]
    item.filepath = str(event.path)
    delivered = sorted(entry.frame for entry in state.frames)
    image = images.deliver(context, state.job_name, event.frame, Path(event.path), delivered, state.frames_total)
    for entry in state.frames if image.source == "SEQUENCE" else [item]:
        entry.image = image.name


def _finish(state: FarmJobState, finished: Finished) -> None:
    if finished.cancelled:
        state.state, state.message = "CANCELLED", f"Cancelled; {len(state.frames)} frame(s) finished"
    elif finished.error:
        state.state, state.message = "FAILED", finished.error
        print(f"error: {finished.error}", file=sys.stderr)
    else:
        state.state = "FINISHED"
        state.fraction = 1.0


def _redraw_panel(context: bpy.types.Context) -> None:
    """Progress lives in properties; Blender redraws the panel showing them only when asked."""
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PROPERTIES":
                area.tag_redraw()


def timer() -> float | None:
    """``bpy.app.timers`` callback: keep running while the job does."""
    return TIMER_INTERVAL if drain(bpy.context) else None


def wait(context: bpy.types.Context, job: FarmJob) -> None:
    """Block until ``job`` ends, applying its events as they come (for scripts and ``wait=True``)."""
    while drain(context):
        job.thread.join(TIMER_INTERVAL)


def cancel() -> None:
    if _active is not None:
        _active.cancel.set()


def shut_down() -> None:
    """On unregister: stop the job and the timer; the thread ends on its own once cancelled."""
    global _active
    cancel()
    _active = None
    if bpy.app.timers.is_registered(timer):
        bpy.app.timers.unregister(timer)
