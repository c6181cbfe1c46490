"""The splitter's plan: which tiles (and sample chunks) make each frame, and where each one goes.

A ``FrameManifest`` is written per frame by the splitter and read by the merger,
which trusts it (not file names) for the set of pieces a frame needs. A piece is
one tile, or with sample splitting one chunk of one tile's samples.
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
class SampleChunk:
    """Samples ``[offset, offset + samples)`` of the frame's total, rendered as Cycles' sample subset."""

    index: int
    offset: int
    samples: int

    def to_json(self) -> dict:
        return {"index": self.index, "offset": self.offset, "samples": self.samples}

    @classmethod
    def from_json(cls, data: dict) -> SampleChunk:
        return cls(int(data["index"]), int(data["offset"]), int(data["samples"]))


@dataclass(frozen=True)
class FrameManifest:
    frame: int
    frame_size: tuple[int, int]  # full render size, the reference for border fractions
    region: Box  # the pixels a plain render produces (the user's border, or the whole frame)
    crop: bool  # True: the written frame is ``region``-sized; False: full size, empty outside
    tiles: tuple[TileSpec, ...]
    chunks: tuple[SampleChunk, ...] = ()  # empty: every tile renders all of the scene's samples

    @property
    def canvas_origin(self) -> tuple[int, int]:
        return (self.region.x0, self.region.y0) if self.crop else (0, 0)

    @property
    def canvas_size(self) -> tuple[int, int]:
        return (self.region.width, self.region.height) if self.crop else self.frame_size

    @property
    def farm_composites(self) -> bool:
        """True when the frame is assembled from pieces, so compositing and denoising wait for the merger."""
        return len(self.tiles) > 1 or len(self.chunks) > 1

    def pieces(self) -> list[tuple[TileSpec, SampleChunk | None]]:
        return [(tile, chunk) for tile in self.tiles for chunk in (self.chunks or (None,))]

    def piece_name(self, tile: TileSpec, chunk: SampleChunk | None) -> str:
        """``<index>`` or ``<index>_<chunk>``: the piece's file stem inside its frame's folder."""
        return f"{tile.index:04d}" if chunk is None else f"{tile.index:04d}_{chunk.index:02d}"

    def to_json(self) -> dict:
        return {
            "frame": self.frame,
            "frame_size": list(self.frame_size),
            "region": self.region.as_list(),
            "crop": self.crop,
            "tiles": [tile.to_json() for tile in self.tiles],
            "chunks": [chunk.to_json() for chunk in self.chunks],
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
            chunks=tuple(SampleChunk.from_json(c) for c in data.get("chunks", ())),
        )

    @classmethod
    def load(cls, path: Path) -> FrameManifest:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def describe_piece(name: str) -> str | None:
    """``000003_0007`` -> ``frame 3 tile 7``; ``000003_0007_01`` adds ``sample chunk 1``; None if not a piece."""
    parts = name.split("_")
    if not (2 <= len(parts) <= 3 and parts[0].lstrip("-").isdigit() and all(p.isdigit() for p in parts[1:])):
        return None
    described = f"frame {int(parts[0])} tile {int(parts[1])}"
    return described + (f" sample chunk {int(parts[2])}" if len(parts) == 3 else "")


def plan_frame(frame: int, frame_size: tuple[int, int], region: Box, crop: bool,
               settings: JobSettings, samples: int = 0) -> FrameManifest:
    """Cut one frame's region into the job's tiles (one tile for whole frames), and each
    tile's ``samples`` into ``settings.sample_chunks`` chunks (at most one per sample)."""
    if settings.tile.whole_frame:
        boxes = [region]
    else:
        boxes = tiles.split(region, settings.tile.width, settings.tile.height)
    limit = Box(0, 0, *frame_size)
    overscan = settings.overscan if len(boxes) > 1 else 0
    specs = tuple(TileSpec(i, box, box.grown(overscan, limit)) for i, box in enumerate(boxes))
    return FrameManifest(frame, frame_size, region, crop, specs, split_samples(samples, settings.sample_chunks))


def split_samples(samples: int, count: int) -> tuple[SampleChunk, ...]:
    """Near-equal consecutive chunks; none when there is nothing to split."""
    count = min(count, samples)
    if count <= 1:
        return ()
    sizes = [samples // count + (1 if i < samples % count else 0) for i in range(count)]
    return tuple(SampleChunk(i, sum(sizes[:i]), size) for i, size in enumerate(sizes))
