"""The farm in Blender's Render menu (Topbar > Render), beside Render Image and Render Animation.

That is where Blender users look for rendering, and menu search (F3) finds its
entries by these labels. The Render Farm panel has the settings; these entries
start the job with them, and cancel it while it runs.
"""

from __future__ import annotations

import bpy

RENDER_LABEL = "Render to Farm"
CANCEL_LABEL = "Cancel Farm Job"


def draw_render_menu(self: bpy.types.Menu, context: bpy.types.Context) -> None:
    """Drawn before Blender's own entries, so the farm sits just above Render Image and Render Animation."""
    layout = self.layout
    layout.operator("farm.render_to_farm", text=RENDER_LABEL, icon="RENDER_ANIMATION")
    layout.operator("farm.cancel_job", text=CANCEL_LABEL, icon="CANCEL")
    layout.separator()


def register() -> None:
    bpy.types.TOPBAR_MT_render.prepend(draw_render_menu)


def unregister() -> None:
    bpy.types.TOPBAR_MT_render.remove(draw_render_menu)
