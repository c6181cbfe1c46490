"""Splitter transform: ``/pfs/blends/<job>`` -> ``/pfs/out/<job>/tiles/*.json`` and ``frames/*/manifest.json``.

Opens the job's blend (untrusted) only to read its active scene: frame size,
render region and frame range. Each tile datum is a small JSON file, so the
renderer's join hands every worker exactly one tile of exactly one job.
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

    out = pfs.output_dir() / job.name
    total = 0
    for frame in frames:
        manifest = plan_frame(frame, size, region, crop, job.settings)
        write_text(out / "frames" / f"{frame:06d}" / "manifest.json", json.dumps(manifest.to_json()))
        for tile in manifest.tiles:
            datum = {"job": job.name, "frame": frame, "tiles_in_frame": len(manifest.tiles), **tile.to_json(),
                     "frame_size": list(size)}
            write_text(out / "tiles" / f"{manifest.tile_name(tile.index)}.json", json.dumps(datum))
        total += len(manifest.tiles)
    print(f"splitter: job {job.name}: {len(frames)} frame(s), {total} tile(s) of {job.settings.tile}", flush=True)


if __name__ == "__main__":
    entry.run(main)
