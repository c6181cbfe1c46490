"""The renderer's ``err_cmd``: a tile that failed is logged with its datum ID and recovered.

pachd runs ``transform.err_cmd`` after every failed try of a datum, with that datum's
environment, in datum-batching mode too (pachyderm v2.7.0
``src/server/worker/pipeline/transform/worker.go``, ``forEachDatum``: the
``datum.WithRecoveryCallback`` it adds calls ``driver.RunUserErrorHandlingCode``,
which ``Datum.run`` in ``src/server/worker/datum/datum.go`` invokes on error). Exit 0
marks the datum RECOVERED; the remaining tries still run (``Set.WithDatum``), and one
that succeeds uploads the tile. If none does, ``Datum.handleFailed`` counts it as
recovered and sets no ``FailedId``, so the renderer's job succeeds without that tile,
the merger's job runs, the frame is named in ``failed.json``, and the next job renders
the tile again (only PROCESSED datums are skipped: ``worker.go``, ``skippableDatum``).
Without this a single bad tile fails the job, the merger's job becomes unrunnable
and every frame of the job is lost.

This command's output goes through the datum's logger, so it carries the datum ID.
"""

from __future__ import annotations

import os
from pathlib import Path

from farm_pipelines.manifest import describe_piece


def recovery_line(environ: dict[str, str]) -> str:
    tile = Path(environ.get("splitter", "?"))
    datum = environ.get("PACH_DATUM_ID", "?")
    what = describe_piece(tile.stem) or "an unknown piece"
    return (f"renderer: recovered tile {tile.parent.parent.name}/tiles/{tile.name} (datum {datum}), {what}, "
            f"after a failed try in job {environ.get('PACH_JOB_ID', '?')}; if no try succeeds the merger "
            "names its frame and merges the others")


def main() -> int:
    print(recovery_line(dict(os.environ)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
