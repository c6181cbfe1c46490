"""Merger transform: one datum per job, joining its blend, its manifests and its tiles.

For every frame in the splitter's manifests it stitches the tiles (float, by pixel
offset) and encodes the frame once through Blender, into
``/pfs/out/<job>/<frame:06d>.<ext>``. A frame made of several pieces (tiles or
sample chunks) is stitched pass by pass and composited, and denoised if the
scene asks, once on the whole frame. A frame with missing or wrong tiles is not
written; its error, naming the tiles, goes to ``/pfs/out/<job>/failed.json`` so
the good frames of the job still land. On Pachyderm that needs the renderer's
``err_cmd`` (``renderer/recover.py``): it marks a tile that failed every try
RECOVERED, so the renderer's job succeeds without it and this job runs, instead of
being left unrunnable behind a failed one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from farm_pipelines import job_folder, merge, pfs
from farm_pipelines.atomic_files import write_text
from farm_pipelines.blender import entry, session
from farm_pipelines.blender.encode import FrameEncoder
from farm_pipelines.job import Job
from farm_pipelines.manifest import FrameManifest
from farm_pipelines.worker_api import run_batched


def merge_datum() -> None:
    if not all(os.environ.get(name) and Path(os.environ[name]).exists() for name in ("blends", "splitter")):
        # A mixed cluster's merger joins with outer_join (a renderer may have no frame of a job), so a
        # key only some renderer still holds (its job's blend deleted) comes alone: nothing to merge.
        print("merger: datum without the job's blend or manifests; nothing to merge", flush=True)
        return
    job_dir = pfs.input_path("blends")
    manifests_dir = pfs.input_path("splitter") / "frames"
    tiles_dirs = pfs.tile_dirs()
    job = Job.load(job_dir / "job.json")
    encoder = FrameEncoder(session.open_untrusted(job_folder.scene_blend(job_dir)), job.settings.file_format)
    out = pfs.output_dir() / job.name
    manifests = sorted((FrameManifest.load(p) for p in manifests_dir.glob("*/manifest.json")),
                       key=lambda m: m.frame)
    failures: list[str] = []
    readers = pfs.threads() or os.cpu_count() or 1  # the CPUs this worker was given
    with tempfile.TemporaryDirectory(prefix="farm-merge-") as scratch:
        for manifest in manifests:
            pieces = _pieces_dir(tiles_dirs, manifest.frame)
            linear = Path(scratch) / f"{manifest.frame:06d}.exr"
            destination = out / f"{manifest.frame:06d}{encoder.extension}"
            try:
                if manifest.farm_composites:
                    merge.write_layers(linear, merge.stitch_layers(manifest, pieces, readers))
                else:
                    merge.write_exr(linear, merge.stitch(manifest, pieces, readers))
            except merge.FrameIncomplete as error:
                failures.append(str(error))
                print(f"merger: {error}", flush=True)
                continue
            if manifest.farm_composites:
                encoder.composite(manifest.frame, linear, manifest.canvas_size, destination)
            else:
                encoder.encode(manifest.frame, linear, manifest.canvas_size, destination)
            print(f"merger: {job.name} frame {manifest.frame} merged", flush=True)
    if failures:
        write_text(out / "failed.json", json.dumps(failures, indent=1))


def _pieces_dir(tiles_dirs: list[Path], frame: int) -> Path:
    """The renderer output holding ``frame``'s pieces; if none has them, a folder that does not exist,
    so the merge names every piece missing."""
    name = f"{frame:06d}"
    return next((folder / name for folder in tiles_dirs if (folder / name).is_dir()),
                (tiles_dirs[0] if tiles_dirs else pfs.output_dir() / ".no-tiles") / name)


def main() -> None:
    # Batched, so a worker can start Blender before the job's tiles are done and wait for its datum.
    run_batched(merge_datum)


if __name__ == "__main__":
    entry.run(main)
