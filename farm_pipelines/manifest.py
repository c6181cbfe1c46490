"""The splitter's plan: which tiles make each frame, and where each one goes.

A ``FrameManifest`` is written per frame by the splitter and read by the merger,
which trusts it (not file names) for the set of tiles a frame needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from farm_pipelines import tiles
from farm_pipelines.job import JobSettings
from farm_pipelines.tiles import Box


@dataclass(frozen=True)
class TileSpec:
    index: int
    box: Box  # the pixels this tile contributes, in frame coordinates
    render_box: Box  # what is rendered: ``box`` plus overscan

    def to_json(self) -> dict:
        return {"index": self.index, "box": self.box.as_list(), "render_box": self.render_box.as_list()}

    @classmethod
    def from_json(cls, data: dict) -> TileSpec:
        return cls(int(data["index"]), Box.from_list(data["box"]), Box.from_list(data["render_box"]))


@dataclass(frozen=True)
class FrameManifest:
    frame: int
    frame_size: tuple[int, int]  # full render size, the reference for border fractions
    region: Box  # the pixels a plain render produces (the user's border, or the whole frame)
    crop: bool  # True: the written frame is ``region``-sized; False: full size, empty outside
    tiles: tuple[TileSpec, ...]

    @property
    def canvas_origin(self) -> tuple[int, int]:
        return (self.region.x0, self.region.y0) if self.crop else (0, 0)

    @property
    def canvas_size(self) -> tuple[int, int]:
        return (self.region.width, self.region.height) if self.crop else self.frame_size

    @property
    def tiled(self) -> bool:
        return len(self.tiles) > 1

    def tile_name(self, index: int) -> str:
        return f"{self.frame:06d}_{index:04d}"

    def to_json(self) -> dict:
        return {
            "frame": self.frame,
            "frame_size": list(self.frame_size),
            "region": self.region.as_list(),
            "crop": self.crop,
            "tiles": [tile.to_json() for tile in self.tiles],
        }

    @classmethod
    def from_json(cls, data: dict) -> FrameManifest:
        width, height = data["frame_size"]
        return cls(
            frame=int(data["frame"]),
            frame_size=(int(width), int(height)),
            region=Box.from_list(data["region"]),
            crop=bool(data["crop"]),
            tiles=tuple(TileSpec.from_json(t) for t in data["tiles"]),
        )

    @classmethod
    def load(cls, path: Path) -> FrameManifest:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def plan_frame(frame: int, frame_size: tuple[int, int], region: Box, crop: bool,
               settings: JobSettings) -> FrameManifest:
    """Cut one frame's region into the job's tiles (one tile for whole frames)."""
    if settings.tile.whole_frame:
        boxes = [region]
    else:
        boxes = tiles.split(region, settings.tile.width, settings.tile.height)
    limit = Box(0, 0, *frame_size)
    overscan = settings.overscan if len(boxes) > 1 else 0
    specs = tuple(TileSpec(i, box, box.grown(overscan, limit)) for i, box in enumerate(boxes))
    return FrameManifest(frame, frame_size, region, crop, specs)
