"""The real renderer transform, with chosen tiles failing: a test pipeline for the faithful farm.

``FLAKY_FAIL_ONCE`` / ``FLAKY_FAIL_ALWAYS`` name tile files (``000001_0002``) whose
first attempt, or every attempt, damages its copy of the tile and raises. Every attempt writes
what the worker gave it to ``FLAKY_DIR/<tile>.<attempt>.json``: this process's pid,
its ``FARM_PFS``, ``PACH_*`` IDs, and the inode of the tile file it was given, so
a test can tell a restarted process, the worker it ran on, and fresh copies apart.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from farm_pipelines import pfs
from farm_pipelines.blender import entry
from farm_pipelines.blender.render_tile import TileRenderer
from farm_pipelines.pipelines.renderer.__main__ import render_datum
from farm_pipelines.worker_api import run_batched


def _attempt(renderer: TileRenderer) -> None:
    tile = pfs.input_path("splitter")
    record = Path(os.environ["FLAKY_DIR"])
    attempt = len(list(record.glob(f"{tile.stem}.*.json")))
    stat = tile.stat()
    facts = {"pid": os.getpid(), "pfs": os.environ["FARM_PFS"], "inode": stat.st_ino, "links": stat.st_nlink,
             "resolved": str(tile.resolve()), **{k: v for k, v in os.environ.items() if k.startswith("PACH_")},
             "splitter_COMMIT": os.environ.get("splitter_COMMIT")}
    (record / f"{tile.stem}.{attempt}.json").write_text(json.dumps(facts), encoding="utf-8")
    once = os.environ.get("FLAKY_FAIL_ONCE", "").split(",")
    always = os.environ.get("FLAKY_FAIL_ALWAYS", "").split(",")
    if tile.stem in always or (tile.stem in once and attempt == 0):
        with tile.open("a", encoding="utf-8") as damaged:  # a copy: the retry must get the tile intact
            damaged.write("not json")
        raise RuntimeError(f"flaky tile {tile.stem} fails (attempt {attempt + 1})")
    render_datum(renderer)


def main() -> None:
    renderer = TileRenderer(threads=pfs.threads())
    run_batched(lambda: _attempt(renderer))


if __name__ == "__main__":
    entry.run(main)
