"""Finished frames as Blender images: load (or reload) them and show them in open Image Editors."""

from __future__ import annotations

from pathlib import Path

import bpy


def load_frame(path: Path) -> bpy.types.Image:
    """The image for ``path``, reloaded so a re-rendered frame replaces the old pixels."""
    image = bpy.data.images.load(str(path), check_existing=True)
    image.reload()
    return image


def show(context: bpy.types.Context, image: bpy.types.Image) -> None:
    """Show ``image`` in every open Image Editor whose image is not pinned."""
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type != "IMAGE_EDITOR":
                continue
            space = area.spaces.active
            if not space.use_image_pin:
                space.image = image
                area.tag_redraw()

