"""Renderer transform, with datum batching: one Blender per datum set renders tile after tile.

Each datum is the join of ``/pfs/blends/<job>/scene`` (the job's blend and its files, not its
``job.json``: ``farm_pipelines.job_folder``) and one ``/pfs/splitter/<job>/tiles/<piece>.json``;
the piece (a tile, or one sample chunk of a tile) goes to ``/pfs/out/<job>/<frame>/<piece>.exr``.
The piece names its job, the Blender that saved it and the blend's content hash, so a
tile whose blend this process (or this pod) has already is rendered without reading
``/pfs/blends`` at all: on Pachyderm that input is lazy and is then never fetched. The piece
says everything else the renderer needs of the job (its name and the Blender that saved it).

A failure is re-raised with the tile and its datum ID on the error line: in batching
mode pachd tags user output with the job only, not the datum (docs/pachyderm_worker_rules.md
section 4), so that marker is how ``farm`` finds the tile's lines among the job's logs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from farm_pipelines import job_folder, pfs
from farm_pipelines.blender import entry
from farm_pipelines.blender.render_tile import TileRenderer
from farm_pipelines.errors import BadInput, FarmFailure
from farm_pipelines.manifest import SampleChunk, TileSpec
from farm_pipelines.worker_api import run_batched


def render_datum(renderer: TileRenderer) -> None:
    tile_path = pfs.input_path("splitter")
    try:
        _render(renderer, tile_path)
    except Exception as failure:
        reason = str(failure) if isinstance(failure, (BadInput, FarmFailure)) else repr(failure)
        raise FarmFailure(f"{tile_marker(tile_path)}: {reason}") from failure


def tile_marker(tile_path: Path) -> str:
    """``tile <job>/tiles/<piece>.json (datum <id>)``: what every failure line of this tile says."""
    return (f"tile {tile_path.parent.parent.name}/tiles/{tile_path.name} "
            f"(datum {os.environ.get('PACH_DATUM_ID', '?')})")


def _render(renderer: TileRenderer, tile_path: Path) -> None:
    datum = json.loads(tile_path.read_text(encoding="utf-8"))
    if "job" not in datum:  # cut by a splitter older than the job folder's scene/ (which it joins with)
        raise BadInput(f"{tile_path.name} names no job: submit the job again to cut its tiles anew")
    name = datum["job"]
    renderer.load(job_folder.blend_in(pfs.input_path("blends")), tuple(datum["saved_with"]), datum.get("blend_sha256"))
    tile = TileSpec.from_json(datum)
    frame = int(datum["frame"])
    chunk = SampleChunk.from_json(datum["chunk"]) if datum.get("chunk") else None
    out = pfs.output_dir() / name / f"{frame:06d}" / f"{datum['piece']}.exr"
    renderer.render(frame, tile, tuple(datum["frame_size"]), out, bool(datum["farm_composites"]), chunk)
    print(f"renderer: {name} frame {frame} piece {datum['piece']} done", flush=True)


def main() -> None:
    renderer = TileRenderer(threads=pfs.threads())
    run_batched(lambda: render_datum(renderer))


if __name__ == "__main__":
    entry.run(main)
