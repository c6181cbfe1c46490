"""Seam metrics: does a tiled frame differ from a whole-frame render more along tile borders than inside tiles?

Plain numpy on top-row-first arrays; tile boxes are in Blender's bottom-up
coordinates, as everywhere in the farm. Used by the compositing tests and
``bench/composite.py``.
"""

from __future__ import annotations

import numpy as np

from farm_pipelines.tiles import Box


def border_mask(boxes: list[Box], size: tuple[int, int], reach: int = 2) -> np.ndarray:
    """True for pixels within ``reach`` px of an internal tile edge (an edge two tiles share)."""
    width, height = size
    mask = np.zeros((height, width), bool)
    for box in boxes:
        if box.x0 > 0:
            rows = slice(height - box.y1, height - box.y0)
            mask[rows, max(0, box.x0 - reach):box.x0 + reach] = True
        if box.y0 > 0:
            row = height - box.y0  # the first row below the edge, top-down
            mask[max(0, row - reach):row + reach, box.x0:box.x1] = True
    return mask


def seam_excess(a: np.ndarray, b: np.ndarray, boxes: list[Box], reach: int = 2) -> float:
    """Largest |a - b| along tile borders minus the largest inside tiles; > 0 means a visible seam."""
    difference = np.abs(a.astype(np.float64) - b.astype(np.float64))
    if difference.ndim == 3:
        difference = difference.max(axis=2)
    mask = border_mask(boxes, (a.shape[1], a.shape[0]), reach)
    return float(difference[mask].max() - difference[~mask].max())


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def paste(boxes: list[Box], images: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Stitch tile images (each exactly its box) into a frame: the naive farm's merge."""
    width, height = size
    frame = np.zeros((height, width, *images[0].shape[2:]), images[0].dtype)
    for box, image in zip(boxes, images, strict=True):
        frame[height - box.y1:height - box.y0, box.x0:box.x1] = image
    return frame
