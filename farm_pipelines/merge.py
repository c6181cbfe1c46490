"""Stitch a frame from its tiles by pixel offset, in float, and say exactly what is wrong if it can't.

Tiles are found through the frame manifest, never by sorting file names.
Arrays are top-row-first (as OpenCV and image files store them) while tile boxes
are in Blender's bottom-up coordinates; the conversion lives here only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
import cv2  # noqa: E402  (the EXR switch must be set before import)

from farm_pipelines.errors import FarmFailure  # noqa: E402
from farm_pipelines.manifest import FrameManifest  # noqa: E402


class FrameIncomplete(FarmFailure):
    """Some tiles of a frame are missing or the wrong size; the message names them."""


def read_exr(path: Path) -> np.ndarray | None:
    """An RGBA float32 array, top row first, or None if the file is missing or unreadable."""
    if not Path(path).is_file():
        return None
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 3 or image.shape[2] not in (3, 4):
        return None
    code = cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGBA
    return cv2.cvtColor(image.astype(np.float32, copy=False), code)


def write_exr(path: Path, rgba: np.ndarray) -> None:
    """Write float32 RGBA losslessly (ZIP), for Blender to pick up."""
    params = [cv2.IMWRITE_EXR_TYPE, cv2.IMWRITE_EXR_TYPE_FLOAT, cv2.IMWRITE_EXR_COMPRESSION,
              cv2.IMWRITE_EXR_COMPRESSION_ZIP]
    if not cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), params):
        raise OSError(f"could not write {path}")


def stitch(manifest: FrameManifest, tile_dir: Path) -> np.ndarray:
    """The frame's canvas, assembled from ``tile_dir/<index>.exr``; areas outside the region stay 0."""
    width, height = manifest.canvas_size
    origin_x, origin_y = manifest.canvas_origin
    canvas = np.zeros((height, width, 4), np.float32)
    problems: list[str] = []
    for tile in manifest.tiles:
        path = Path(tile_dir) / f"{tile.index:04d}.exr"
        pixels = read_exr(path)
        rendered = tile.render_box
        name = f"tile {tile.index} {tile.box.as_list()}"
        if pixels is None:
            problems.append(f"{name} missing or unreadable")
            continue
        if pixels.shape[:2] != (rendered.height, rendered.width):
            problems.append(f"{name} is {pixels.shape[1]}x{pixels.shape[0]}, expected "
                            f"{rendered.width}x{rendered.height}")
            continue
        # Crop overscan: offsets of the tile inside what was rendered, converted to top-down rows.
        left = tile.box.x0 - rendered.x0
        top = rendered.y1 - tile.box.y1
        inner = pixels[top:top + tile.box.height, left:left + tile.box.width]
        x0 = tile.box.x0 - origin_x
        row0 = height - (tile.box.y1 - origin_y)
        canvas[row0:row0 + tile.box.height, x0:x0 + tile.box.width] = inner
    if problems:
        raise FrameIncomplete(f"frame {manifest.frame}: " + "; ".join(problems))
    return canvas
