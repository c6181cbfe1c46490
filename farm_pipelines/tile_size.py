"""Choose a tile size by simulating the farm: the model behind ``--tile auto`` and ``bench/heterogeneous.py``.

A tile costs ``overhead + pixels * pixel cost`` seconds on a worker of speed 1,
and ``1/speed`` times that on a worker of another speed (a GPU-like worker of
speed 8 pays its per-tile overhead eight times faster too: the model's one
simplification of speed). Tiles are handed out as the local farm hands out
datums: in frame-major order, each to whichever worker is free first. Small
tiles balance the end of the job but pay the overhead more often; the chosen
size is the candidate whose simulated makespan is shortest. Pure Python, no bpy.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Sequence
from dataclasses import dataclass

from farm_pipelines.errors import BadInput
from farm_pipelines.job import JobSettings, TileSize
from farm_pipelines.manifest import plan_frame
from farm_pipelines.tiles import Box

#: Seconds of fixed cost per tile (per datum) on the local farm, from measurements on the 2-core
#: development machine (2026-11-29): inside one Blender process a tile costs 6.4 ms extra
#: (``bench/heterogeneous.py``, demo scene 320x180, 64 samples, one thread), and the datum
#: hand-off between tiles (NextDatum, /pfs links, the commit) 3.1 ms (timed in the workers).
#: The one-worker farm runs of the same bench fit 4.9 ms, too noisy to trust alone; 10 ms keeps
#: the sum. ``FARM_TILE_OVERHEAD_S`` overrides it.
DEFAULT_OVERHEAD_S = 0.010
#: Seconds of fixed cost per tile on a Pachyderm cluster. Measured part: the local farm run by a
#: real worker's rules (``FARM_FAITHFUL=1``: a fresh folder and copies of the inputs per datum, a
#: process per datum set) costs about 68 ms more per 16 px tile and worker than the everyday farm
#: on the development machine (demo 320x180, 720 tiles, 2 workers, 2026-12-01: 50.8 s against
#: 22.0 s, less 6 more Blender starts of ~1.4 s), on top of its 10 ms; 28 ms in bench/overhead.py's
#: 640x360 run the same evening (README), so this errs toward larger tiles. Estimated part: pachd's own
#: work per datum with a lazy blend input, about 20 ms (NextDatum, the sidecar download, the meta
#: upload; docs/pachyderm_worker_rules.md section 9). No pachd runs here to measure it.
#: ``FARM_TILE_OVERHEAD_S`` overrides it as well.
CLUSTER_OVERHEAD_S = 0.10
#: Seconds per pixel, one Blender thread (what a local worker gets on 2 cores), demo scene as above
#: (1.56e-4 in an earlier, busier run). Heavier scenes cost more per pixel and make the overhead
#: matter less; ``FARM_TILE_PIXEL_S`` overrides it.
DEFAULT_PIXEL_S = 1.33e-4

#: Square tile edges ``--tile auto`` chooses from (whole frames are a candidate too).
CANDIDATES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)

#: The farm shapes the bench reports and the tests hold the model to: worker speeds.
FARM_SHAPES: dict[str, tuple[float, ...]] = {
    "2 equal": (1, 1),
    "8 equal": (1,) * 8,
    "mixed 1,1,.5,.25": (1, 1, 0.5, 0.25),
    "mixed + GPU 8": (1, 1, 0.5, 0.25, 8),
    "GPU 8 + 1 CPU": (8, 1),
}

#: Beyond this many datums only the last frames are simulated one by one (see ``makespan``).
MAX_SIMULATED_TILES = 40_000


@dataclass(frozen=True)
class Costs:
    overhead_s: float = DEFAULT_OVERHEAD_S
    pixel_s: float = DEFAULT_PIXEL_S

    @classmethod
    def from_env(cls, cluster: bool = False) -> Costs:
        """The local farm's (or with ``cluster``, a Pachyderm cluster's) costs, unless
        ``FARM_TILE_OVERHEAD_S`` or ``FARM_TILE_PIXEL_S`` say otherwise."""
        overhead = CLUSTER_OVERHEAD_S if cluster else DEFAULT_OVERHEAD_S
        return cls(_seconds("FARM_TILE_OVERHEAD_S", overhead), _seconds("FARM_TILE_PIXEL_S", DEFAULT_PIXEL_S))


def _seconds(variable: str, default: float) -> float:
    text = os.environ.get(variable, "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise BadInput(f"{variable}={text!r} is not a number of seconds (0 or more)")
    return value


@dataclass(frozen=True)
class Shot:
    """What the farm renders: ``frames`` frames of ``region`` out of a ``frame_size`` frame,
    each tile's samples split into ``chunks`` datums (``--sample-chunks``)."""

    frame_size: tuple[int, int]
    region: Box
    frames: int
    overscan: int = 0
    chunks: int = 1

    def datum_pixels(self, tile: TileSize) -> list[float]:
        """Full-sample pixels' worth of work per datum of one frame, in the splitter's order."""
        plan = plan_frame(0, self.frame_size, self.region, False, JobSettings(tile=tile, overscan=self.overscan))
        boxes = [spec.render_box for spec in plan.tiles]
        return [box.width * box.height / self.chunks for box in boxes for _ in range(self.chunks)]


def ideal(shot: Shot, speeds: Sequence[float], costs: Costs) -> float:
    """The unreachable best: every pixel's cost spread perfectly over the farm, no per-tile overhead."""
    return shot.frames * shot.region.width * shot.region.height * costs.pixel_s / sum(speeds)


def makespan(shot: Shot, tile: TileSize, speeds: Sequence[float], costs: Costs) -> float:
    """Seconds until the last datum is done when free workers take datums in frame-major order.

    Exact up to ``MAX_SIMULATED_TILES`` datums. Longer jobs simulate only their last
    frames; the frames before keep every worker busy, so they add their work
    divided by the farm's total speed.
    """
    durations = [costs.overhead_s + pixels * costs.pixel_s for pixels in shot.datum_pixels(tile)]
    simulated = min(shot.frames, max(1, MAX_SIMULATED_TILES // len(durations)))
    start = (shot.frames - simulated) * sum(durations) / sum(speeds)
    free = [(start, index) for index in range(len(speeds))]  # (free at, worker): ties go to the lower index
    finish = start
    for _ in range(simulated):
        for duration in durations:
            at, worker = heapq.heappop(free)
            done = at + duration / speeds[worker]
            finish = max(finish, done)
            heapq.heappush(free, (done, worker))
    return finish


def choose(shot: Shot, speeds: Sequence[float], costs: Costs) -> TileSize:
    """The candidate tile (square edges up to the region's size, or whole frames) that finishes first."""
    longest = max(shot.region.width, shot.region.height)
    options = [TileSize(edge, edge) for edge in CANDIDATES if edge < longest] + [TileSize()]
    return min(options, key=lambda tile: makespan(shot, tile, speeds, costs))
