"""Render to Farm and Cancel Farm Job: the Render Farm panel's buttons and the Render menu's entries."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty
from bpy.types import Operator

from farm_pipelines.errors import BadInput

from . import dependencies, jobs, submit
from .properties import FarmJobState


class FARM_OT_render_to_farm(Operator):  # noqa: N801  (Blender's operator naming)
    """Render the scene's animation as tiles on the farm; unsaved changes are included"""

    bl_idname = "farm.render_to_farm"
    bl_label = "Render to Farm"
    bl_options = {"REGISTER"}

    wait: BoolProperty(
        name="Wait", options={"SKIP_SAVE"},
        description="Block until the job is done, for scripts; the UI uses a timer instead")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if jobs.running():
            cls.poll_message_set("A farm job is already running")
            return False
        return context.scene is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        state = context.window_manager.render_farm_job
        missing = dependencies.missing(context.scene.render_farm.backend)
        if missing:
            return self._fail(state, dependencies.message(missing))
        try:
            submission = submit.from_context(context)
        except BadInput as error:
            return self._fail(state, str(error))
        job = jobs.start(context, submission)
        if not self.wait:
            bpy.app.timers.register(jobs.timer, first_interval=jobs.TIMER_INTERVAL, persistent=True)
            self.report({"INFO"}, f"Submitted {submission.display_name} to the farm")
            return {"FINISHED"}
        jobs.wait(context, job)
        for warning in filter(None, state.warnings.splitlines()):
            self.report({"WARNING"}, warning)
        if state.state == "FAILED":
            self.report({"ERROR"}, state.message)
            return {"CANCELLED"}
        self.report({"INFO"}, state.message)
        return {"FINISHED"}

    def _fail(self, state: FarmJobState, message: str) -> set[str]:
        state.state, state.message = "FAILED", message
        self.report({"ERROR"}, message)
        return {"CANCELLED"}


class FARM_OT_cancel_job(Operator):  # noqa: N801
    """Stop the running farm job; finished frames stay in the output folder"""

    bl_idname = "farm.cancel_job"
    bl_label = "Cancel Farm Job"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if not jobs.running():
            cls.poll_message_set("No farm job is running")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        jobs.cancel()
        context.window_manager.render_farm_job.message = "Cancelling..."
        return {"FINISHED"}


register, unregister = bpy.utils.register_classes_factory((FARM_OT_render_to_farm, FARM_OT_cancel_job))
