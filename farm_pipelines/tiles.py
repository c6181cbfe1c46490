"""Tile geometry: integer pixel boxes that cover a render region exactly once.

Coordinates follow Blender: x grows right, y grows *up* from the bottom row,
and a box is half-open ``[x0, x1) x [y0, y1)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]

    @classmethod
    def from_list(cls, values: list[int]) -> Box:
        x0, y0, x1, y1 = (int(v) for v in values)
        return cls(x0, y0, x1, y1)

    def grown(self, margin: int, limit: Box) -> Box:
        """This box plus ``margin`` pixels on every side, clipped to ``limit``."""
        return Box(
            max(limit.x0, self.x0 - margin),
            max(limit.y0, self.y0 - margin),
            min(limit.x1, self.x1 + margin),
            min(limit.y1, self.y1 + margin),
        )


def render_size(resolution_x: int, resolution_y: int, percentage: int) -> tuple[int, int]:
    """Final pixel size, with Blender's integer arithmetic (``BKE_render_resolution``)."""
    return resolution_x * percentage // 100, resolution_y * percentage // 100


def border_region(width: int, height: int, border: tuple[float, float, float, float]) -> Box:
    """The pixel box Blender renders for a border ``(min_x, min_y, max_x, max_y)``.

    Blender truncates ``border * size`` towards zero (``render_init_from_main``);
    the computation is done in float32 there, which this mirrors closely enough
    for any border a user can set.
    """
    min_x, min_y, max_x, max_y = border
    box = Box(int(min_x * width), int(min_y * height), int(max_x * width), int(max_y * height))
    if box.width <= 0 or box.height <= 0:
        return Box(0, 0, width, height)
    return box


def border_for_box(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    """Border fractions that make Blender render exactly ``box``.

    Aiming at pixel centres keeps float rounding away from the truncation edge;
    a box that reaches the frame edge uses exactly 1.0.
    """

    def frac(value: int, size: int) -> float:
        return 1.0 if value >= size else (value + 0.5) / size

    return frac(box.x0, width), frac(box.y0, height), frac(box.x1, width), frac(box.y1, height)


def split(region: Box, tile_width: int, tile_height: int) -> list[Box]:
    """Tiles of at most ``tile_width x tile_height`` covering ``region``; edge tiles are smaller.

    Tiles are ordered bottom row first, left to right, so a tile's index is stable
    for a given region and tile size.
    """
    if tile_width <= 0 or tile_height <= 0:
        raise ValueError(f"tile size must be positive, got {tile_width}x{tile_height}")
    return list(_boxes(region, tile_width, tile_height))


def _boxes(region: Box, tile_width: int, tile_height: int) -> Iterator[Box]:
    for y0 in range(region.y0, region.y1, tile_height):
        for x0 in range(region.x0, region.x1, tile_width):
            yield Box(x0, y0, min(x0 + tile_width, region.x1), min(y0 + tile_height, region.y1))

