"""Merger transform: one datum per frame, joining the job's blend, the frame's manifest and the job's tiles.

It stitches the frame's tiles (float, by pixel offset) and encodes the frame once
through Blender, into ``/pfs/out/<job>/<frame:06d>.<ext>``. A frame made of several
pieces (tiles or sample chunks) is stitched pass by pass and composited, and
denoised if the scene asks, once on the whole frame. One datum per frame, so a
frame lands as soon as its own tiles are done: the local farm hands the merger each
frame when its last tile settles, and a Pachyderm job merges its frames in parallel.
A frame with missing or wrong tiles is not written; its error, naming the tiles,
goes to ``/pfs/out/<job>/failed/<frame>.txt`` (``merged_frames``), so the job's good
frames still land. On Pachyderm that needs the renderer's ``err_cmd``
(``renderer/recover.py``): it marks a tile that failed every try RECOVERED, so the
renderer's job succeeds without it and this job runs, instead of being left
unrunnable behind a failed one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from farm_pipelines import job_folder, merge, merged_frames, pfs
from farm_pipelines.atomic_files import write_text
from farm_pipelines.blender import entry, session
from farm_pipelines.blender.encode import FrameEncoder
from farm_pipelines.job import Job
from farm_pipelines.manifest import FrameManifest
from farm_pipelines.worker_api import run_batched


class Encoders:
    """The encoder of the job whose blend this process opened last: frames of one job share it."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._encoder: FrameEncoder | None = None

    def get(self, job_dir: Path, job: Job) -> FrameEncoder:
        blend = job_folder.scene_blend(job_dir)
        stat = blend.stat()
        key = (os.path.realpath(blend), stat.st_ino, stat.st_size, stat.st_mtime_ns, job.settings.file_format)
        if key != self._key or self._encoder is None:
            self._encoder = FrameEncoder(session.open_untrusted(blend), job.settings.file_format)
            self._key = key
        return self._encoder


def merge_datum(encoders: Encoders) -> None:
    if not all(os.environ.get(name) and Path(os.environ[name]).exists() for name in ("blends", "splitter")):
        # A mixed cluster's merger joins with outer_join (a renderer may have no frame of a job), so a
        # key only some renderer still holds (its job's blend deleted) comes alone: nothing to merge.
        print("merger: datum without the job's blend or manifest; nothing to merge", flush=True)
        return
    job_dir = pfs.input_path("blends")
    manifest = FrameManifest.load(pfs.input_path("splitter") / "manifest.json")
    job = Job.load(job_dir / "job.json")
    encoder = encoders.get(job_dir, job)
    out = pfs.output_dir() / job.name
    readers = pfs.threads() or os.cpu_count() or 1  # the CPUs this worker was given
    destination = out / merged_frames.frame_name(manifest.frame, encoder.extension)
    with tempfile.TemporaryDirectory(prefix="farm-merge-") as scratch:
        pieces = _seekable(_pieces_dir(pfs.tile_dirs(), manifest.frame), Path(scratch) / "pieces")
        linear = Path(scratch) / f"{manifest.frame:06d}.exr"
        try:
            if manifest.farm_composites:
                merge.write_layers(linear, merge.stitch_layers(manifest, pieces, readers))
            else:
                merge.write_exr(linear, merge.stitch(manifest, pieces, readers))
        except merge.FrameIncomplete as error:
            write_text(out / merged_frames.failure_path(manifest.frame), str(error))
            print(f"merger: {error}", flush=True)
            return
        if manifest.farm_composites:
            encoder.composite(manifest.frame, linear, manifest.canvas_size, destination)
        else:
            encoder.encode(manifest.frame, linear, manifest.canvas_size, destination)
    print(f"merger: {job.name} frame {manifest.frame} merged", flush=True)


def _pieces_dir(tiles_dirs: list[Path], frame: int) -> Path:
    """The renderer output holding ``frame``'s pieces; if none has them, a folder that does not exist,
    so the merge names every piece missing."""
    name = f"{frame:06d}"
    return next((folder / name for folder in tiles_dirs if (folder / name).is_dir()),
                (tiles_dirs[0] if tiles_dirs else pfs.output_dir() / ".no-tiles") / name)


def _seekable(pieces: Path, scratch: Path) -> Path:
    """``pieces``, or a copy of it in ``scratch`` when its files are named pipes.

    The renderer input is ``lazy``: pachd puts a named pipe where each tile would be and
    fetches a tile only when its pipe is opened (v2.7.0 ``src/internal/pfssync/pipe_unix.go``,
    ``makePipe``), so a frame's datum downloads only its own tiles, not the job's. A pipe
    cannot be seeked and an EXR reader seeks, so the frame's pipes are read once, in order.
    """
    if not pieces.is_dir():
        return pieces
    files = sorted(pieces.iterdir())
    if all(path.is_file() for path in files):  # regular files (the local farm, a spec without lazy)
        return pieces
    scratch.mkdir()
    for path in files:
        with path.open("rb") as source, (scratch / path.name).open("wb") as copy:
            while chunk := source.read(1 << 20):
                copy.write(chunk)
    return scratch


def main() -> None:
    # Batched, so a worker can start Blender before the job's tiles are done and wait for its frames.
    encoders = Encoders()
    run_batched(lambda: merge_datum(encoders))


if __name__ == "__main__":
    entry.run(main)
