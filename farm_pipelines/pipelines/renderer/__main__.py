"""Renderer transform, with datum batching: one Blender per worker renders tile after tile.

Each datum is the join of ``/pfs/blends/<job>`` and one ``/pfs/splitter/<job>/tiles/<piece>.json``;
the piece (a tile, or one sample chunk of a tile) goes to ``/pfs/out/<job>/<frame>/<piece>.exr``.
"""

from __future__ import annotations

import json
from pathlib import Path

from farm_pipelines import pfs
from farm_pipelines.blender import entry
from farm_pipelines.blender.render_tile import TileRenderer
from farm_pipelines.job import Job
from farm_pipelines.manifest import SampleChunk, TileSpec
from farm_pipelines.worker_api import run_batched


def render_datum(renderer: TileRenderer, jobs: dict[tuple, Job]) -> None:
    job_dir = pfs.input_path("blends")
    datum = json.loads(pfs.input_path("splitter").read_text(encoding="utf-8"))
    job = _job(job_dir / "job.json", jobs)
    renderer.load(job_dir / "scene.blend", job.saved_with)
    tile = TileSpec.from_json(datum)
    frame = int(datum["frame"])
    chunk = SampleChunk.from_json(datum["chunk"]) if datum.get("chunk") else None
    out = pfs.output_dir() / job.name / f"{frame:06d}" / f"{datum['piece']}.exr"
    renderer.render(frame, tile, tuple(datum["frame_size"]), out, bool(datum["farm_composites"]), chunk)
    print(f"renderer: {job.name} frame {frame} piece {datum['piece']} done", flush=True)


def _job(path: Path, jobs: dict[tuple, Job]) -> Job:
    """The job's settings, read again only when its file changes: a resubmitted job keeps its name."""
    stat = path.stat()
    key = (path, stat.st_ino, stat.st_mtime_ns, stat.st_size)
    if key not in jobs:
        jobs.clear()
        jobs[key] = Job.load(path)
    return jobs[key]


def main() -> None:
    renderer, jobs = TileRenderer(threads=pfs.threads()), {}
    run_batched(lambda: render_datum(renderer, jobs))


if __name__ == "__main__":
    entry.run(main)
