"""Splitter transform: ``/pfs/blends/<job>`` -> ``/pfs/out/<job>/tiles/*.json`` and ``frames/*/manifest.json``.

Opens the job's blend (untrusted) only to read its active scene: frame size,
render region, frame range and samples. Each piece datum (a tile, or one sample
chunk of a tile) is a small JSON file, so the renderer's join hands every worker
exactly one piece of exactly one job.
"""

from __future__ import annotations

import json

from farm_pipelines import pfs
from farm_pipelines.atomic_files import write_text
from farm_pipelines.blender import entry, session
from farm_pipelines.errors import BadInput
from farm_pipelines.job import Job
from farm_pipelines.manifest import plan_frame


def main() -> None:
    job_dir = pfs.input_path("blends")
    job = Job.load(job_dir / "job.json")
    blend = job_dir / "scene.blend"
    scene = session.open_untrusted(blend)
    session.require_camera(scene, blend)
    frames = job.settings.frames.frames(scene.frame_start, scene.frame_end)
    if not frames:
        raise BadInput(f"job {job.display_name!r}: the frame range is empty")
    size = session.frame_size(scene)
    region = session.render_region(scene)
    crop = scene.render.use_border and scene.render.use_crop_to_border
    chunks = job.settings.sample_chunks
    if chunks > 1 and scene.render.engine != "CYCLES":
        raise BadInput(f"job {job.display_name!r}: --sample-chunks needs Cycles; "
                       f"the scene renders with {scene.render.engine}")
    samples = scene.cycles.samples if chunks > 1 else 0

    out = pfs.output_dir() / job.name
    total = 0
    for frame in frames:
        manifest = plan_frame(frame, size, region, crop, job.settings, samples)
        write_text(out / "frames" / f"{frame:06d}" / "manifest.json", json.dumps(manifest.to_json()))
        for tile, chunk in manifest.pieces():
            piece = manifest.piece_name(tile, chunk)
            datum = {"frame": frame, "piece": piece, "farm_composites": manifest.farm_composites,
                     **tile.to_json(), "chunk": chunk.to_json() if chunk else None, "frame_size": list(size)}
            write_text(out / "tiles" / f"{frame:06d}_{piece}.json", json.dumps(datum))
        total += len(manifest.pieces())
    print(f"splitter: job {job.name}: {len(frames)} frame(s), {total} piece(s) of {job.settings.tile}"
          f"{f', {chunks} sample chunks' if chunks > 1 else ''}", flush=True)


if __name__ == "__main__":
    entry.run(main)
