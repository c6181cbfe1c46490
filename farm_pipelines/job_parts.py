"""A job cut into parts of frames, each submitted as its own commit, so frames land per part.

On Pachyderm a pipeline's output commit is finished only when its job has processed
every datum of the commit, and a client can read a job's merged frames only then
(docs/pachyderm_worker_rules.md section 5). A job submitted as one commit therefore
delivers no frame before its last tile. Submitted as several commits, each part's
frames land as soon as that part's merger job is done, while the next parts render.

Parts are cells of a fixed grid over the scene's frames, counted from its first frame in
its frame step: 1, 2, 4, 8 frames, then ``MAX_PART_FRAMES`` each. The first frame lands
after about one frame's work, a long shot needs few commits (250 frames make 19), each
of which costs pachd a job per pipeline, and a frame is always in the same part
(``<job>.p<cell>``), whatever range is asked: pachd identifies a datum by its paths, so a
part named by its place in the asked range would render again every tile of a frame
that another range moved to another part. A part is a job of its own, with the same
scene and the part's frames in its ``job.json``.

A part is also never smaller than ``least`` frames, enough tiles for datum sets of two:
pachd cuts a job's datums into sets of ``datums / (workers x per_worker)`` and starts the
user process once per set (v2.7.0 ``src/server/worker/pipeline/transform/worker.go``,
``handleDatumSetBatching``; ``pachd_rules.set_spec``), so a part of a few tiles would
start Blender once per tile.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from farm_pipelines.job import FrameRange, Job, check_job_name
from farm_pipelines.local.pachd_rules import DEFAULT_SETS_PER_WORKER

MAX_PART_FRAMES = 16
#: A part's name: its job's (which ends in ``-`` and 8 hex digits, ``job.job_name_for``), ``.p``, its cell.
_PART = re.compile(r"^(?P<job>.+-[0-9a-f]{8})\.p(?P<cell>-?\d+)$")


@dataclass(frozen=True)
class FramePlan:
    """The frames a job renders, as prepare resolved them, and what places them on the grid."""

    frames: list[int]
    scene_start: int
    tiles_per_frame: int = 1

    @property
    def step(self) -> int:
        return self.frames[1] - self.frames[0] if len(self.frames) > 1 else 1


def cell_sizes(least: int = 1) -> list[int]:
    """The grid's first cells, before every cell is ``max(MAX_PART_FRAMES, least)`` frames."""
    sizes, size = [], 1
    cap = max(MAX_PART_FRAMES, least)
    while size < cap:
        sizes.append(max(size, least))
        size *= 2
    return [size for size in sizes if size < cap] or [cap]


def cell_of(index: int, least: int = 1) -> int:
    """The grid cell of the frame ``index`` steps after the scene's first (negative: before it)."""
    cap = max(MAX_PART_FRAMES, least)
    if index < 0:
        return -1 - (-index - 1) // cap
    start = 0
    for cell, size in enumerate(cell_sizes(least)):
        if index < start + size:
            return cell
        start += size
    return len(cell_sizes(least)) + (index - start) // cap


def min_tiles(renderer_spec: dict, workers: int) -> int:
    """The fewest tiles a part should hold so that each of the renderer's datum sets has two or more.

    As ``pachd_rules.set_spec``: a fixed ``number`` or ``size_bytes`` does not depend on the
    job's size; otherwise sets hold ``datums // (workers * per_worker)``, ``per_worker`` 4 by default.
    """
    given = renderer_spec.get("datum_set_spec")
    if given and (given.get("number") or given.get("size_bytes")):
        return 1
    per_worker = int(given.get("per_worker", 0) or 1) if given is not None else DEFAULT_SETS_PER_WORKER
    return 2 * max(1, workers) * per_worker


def split(job: Job, plan: FramePlan | None, least_tiles: int = 1) -> list[Job]:
    """The job's parts, in frame order; without a plan, the job is its own single part.

    Each part holds the plan's frames of one grid cell, a range with the plan's step, and
    the cells hold at least ``least_tiles`` tiles of ``plan.tiles_per_frame`` each.
    """
    if plan is None or not plan.frames:
        return [job]
    least = -(-max(1, least_tiles) // max(1, plan.tiles_per_frame))
    cells: dict[int, list[int]] = {}
    for frame in plan.frames:
        cells.setdefault(cell_of((frame - plan.scene_start) // plan.step, least), []).append(frame)
    return [dataclasses.replace(job, name=part_name(job.name, cell),
                                settings=dataclasses.replace(job.settings, frames=FrameRange(chunk[0], chunk[-1],
                                                                                             plan.step)))
            for cell, chunk in cells.items()]


def part_name(job_name: str, cell: int) -> str:
    return check_job_name(f"{job_name}.p{cell}")


def job_of(folder_name: str) -> str:
    """The job a folder in ``blends`` belongs to: ``shot-1a2b3c4d.p3`` -> ``shot-1a2b3c4d``."""
    match = _PART.match(folder_name)
    return match.group("job") if match else folder_name
