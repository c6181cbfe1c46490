"""A job cut into parts of consecutive frames, each submitted as its own commit, so frames land per part.

On Pachyderm a pipeline's output commit is finished only when its job has processed
every datum of the commit, and a client can read a job's merged frames only then
(docs/pachyderm_worker_rules.md section 5). A job submitted as one commit therefore
delivers no frame before its last tile. Submitted as several commits, each part's
frames land as soon as that part's merger job is done, while the next parts render.

Parts double in size, 1, 2, 4, ... frames, up to ``MAX_PART_FRAMES``: the first frame
lands after about one frame's work, and a long shot needs few commits (250 frames
make 12), each of which costs pachd a job per pipeline. A part is a job of its own
(``<job>.part<N>``) with the same scene and the part's frames in its ``job.json``.

A part is also never smaller than ``min_tiles`` tiles: pachd cuts a job's datums into
sets of ``datums / (workers x per_worker)`` and starts the user process once per set
(v2.7.0 ``src/server/worker/pipeline/transform/worker.go``, ``handleDatumSetBatching``;
``pachd_rules.set_spec``), so a part of a few tiles would start Blender once per tile.
"""

from __future__ import annotations

import dataclasses
import re

from farm_pipelines.job import FrameRange, Job, check_job_name
from farm_pipelines.local.pachd_rules import DEFAULT_SETS_PER_WORKER

MAX_PART_FRAMES = 32
_PART = re.compile(r"^(?P<job>.+)\.part(?P<index>\d+)$")


def part_sizes(count: int, least: int = 1) -> list[int]:
    """How many frames each part of a ``count``-frame job holds: ``least``, then twice as many each
    time, up to ``MAX_PART_FRAMES`` (or ``least``, if more); the last part has what is left."""
    sizes: list[int] = []
    size = max(1, least)
    while sum(sizes) < count:
        sizes.append(min(size, max(MAX_PART_FRAMES, least), count - sum(sizes)))
        size *= 2
    return sizes


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


def split(job: Job, frames: list[int], tiles_per_frame: int = 1, least_tiles: int = 1) -> list[Job]:
    """The job's parts, in frame order; a job that fits one part is its own, under its own name.

    ``frames`` is the job's frame list as prepare resolved it (evenly spaced, the step its own),
    so each part's frames are a range with that step. Each part holds at least ``least_tiles``
    tiles of ``tiles_per_frame`` each.
    """
    least = -(-max(1, least_tiles) // max(1, tiles_per_frame))
    if len(frames) <= least:
        return [job]
    step = frames[1] - frames[0]
    parts, start = [], 0
    for index, size in enumerate(part_sizes(len(frames), least), start=1):
        chunk = frames[start:start + size]
        start += size
        settings = dataclasses.replace(job.settings, frames=FrameRange(chunk[0], chunk[-1], step))
        parts.append(dataclasses.replace(job, name=part_name(job.name, index), settings=settings))
    return parts


def part_name(job_name: str, index: int) -> str:
    return check_job_name(f"{job_name}.part{index}")


def job_of(folder_name: str) -> str:
    """The job a folder in ``blends`` belongs to: ``shot-1a2b3c4d.part3`` -> ``shot-1a2b3c4d``."""
    match = _PART.match(folder_name)
    return match.group("job") if match else folder_name
