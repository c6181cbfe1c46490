"""Splitter transform: ``/pfs/blends/<job>`` -> ``/pfs/out/<job>/tiles/*.json``, ``frames/*/manifest.json``
and ``scene.json``.

Opens the job's blend (untrusted) only to read its active scene: frame size,
render region, frame range and samples. Each piece datum (a tile, or one sample
chunk of a tile) is a small JSON file, so the renderer's join hands every worker
exactly one piece of exactly one job. Each piece also carries what the renderer
needs of the job without opening the job's folder: its name, the Blender that saved
it and the blend's content hash, by which a renderer finds a blend it already has
(``farm_pipelines.blend_cache``). Batched, so the local farm can start its
Blender while the job is still being prepared, and a pod keeps one between jobs.
"""

from __future__ import annotations

import json

from farm_pipelines import job_folder, pfs
from farm_pipelines.blend_cache import file_sha256
from farm_pipelines.blender import devices, entry, session
from farm_pipelines.errors import BadInput
from farm_pipelines.job import Job
from farm_pipelines.manifest import plan_frame
from farm_pipelines.worker_api import run_batched


def split_datum() -> None:
    job_dir = pfs.input_path("blends")
    job = Job.load(job_folder.job_json(job_dir))
    blend = job_folder.scene_blend(job_dir)
    blend_sha256 = file_sha256(blend)
    scene = session.open_untrusted(blend)
    session.require_camera(scene, blend)
    frames = job.settings.frames.frames(scene.frame_start, scene.frame_end, scene.frame_step)
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

    # Plain writes, not temporary names and renames: /pfs/out stays private to this datum until it
    # succeeds (a failed datum's output is thrown away), and a job can hold thousands of tiles.
    out = pfs.output_dir() / job.name
    (out / "tiles").mkdir(parents=True, exist_ok=True)
    # Whether the scene asks for a GPU: a local farm with GPU and CPU workers then keeps each frame on one kind.
    (out / "scene.json").write_text(json.dumps({"gpu": devices.asks_for_gpu(scene)}), encoding="utf-8")
    total = 0
    for frame in frames:
        manifest = plan_frame(frame, size, region, crop, job.settings, samples)
        frame_dir = out / "frames" / f"{frame:06d}"
        frame_dir.mkdir(parents=True, exist_ok=True)
        (frame_dir / "manifest.json").write_text(json.dumps(manifest.to_json()), encoding="utf-8")
        for tile, chunk in manifest.pieces():
            piece = manifest.piece_name(tile, chunk)
            datum = {"job": job.name, "blend_sha256": blend_sha256, "saved_with": list(job.saved_with),
                     "frame": frame, "piece": piece, "farm_composites": manifest.farm_composites,
                     **tile.to_json(), "chunk": chunk.to_json() if chunk else None, "frame_size": list(size)}
            (out / "tiles" / f"{frame:06d}_{piece}.json").write_text(json.dumps(datum), encoding="utf-8")
        total += len(manifest.pieces())
    print(f"splitter: job {job.name}: {len(frames)} frame(s), {total} piece(s) of {job.settings.tile}"
          f"{f', {chunks} sample chunks' if chunks > 1 else ''}", flush=True)


def main() -> None:
    run_batched(split_datum)


if __name__ == "__main__":
    entry.run(main)
