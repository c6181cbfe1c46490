"""Where a pipeline's datum lives, read the way Pachyderm publishes it.

Pachyderm sets one environment variable per input, named after the input and
holding the path of that input's file or directory in the current datum. The
output directory is always ``/pfs/out``; the local farm points ``FARM_PFS`` at
its own per-worker root instead of ``/pfs``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from farm_pipelines.errors import FarmFailure

#: The worker's Blender thread count, read by the renderer and the merger.
THREADS_ENV = "FARM_THREADS"


def pfs_root() -> Path:
    return Path(os.environ.get("FARM_PFS", "/pfs"))


def input_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise FarmFailure(f"input {name!r} is not set: this code runs as a Pachyderm pipeline transform")
    return Path(value)


#: The merger's inputs that hold rendered tiles: a mixed cluster's GPU renderer is the second
#: (``cluster_specs.mixed_specs``); each frame's tiles are in exactly one of them.
RENDERER_INPUTS = ("renderer", "renderer_gpu")


def tile_dirs() -> list[Path]:
    """The renderer inputs this datum has: with ``outer_join`` a renderer without the job is left out."""
    return [Path(os.environ[name]) for name in RENDERER_INPUTS if os.environ.get(name)
            and Path(os.environ[name]).exists()]


def output_dir() -> Path:
    return pfs_root() / "out"


def threads() -> int:
    """Blender threads for this worker; 0 (unset) lets Blender use every core it sees.

    The local farm sets it per worker; on a cluster ``farm deploy`` writes it into each
    spec's ``transform.env`` (``spec_threads``), since pachd tells user code nothing of
    its CPU request.
    """
    text = os.environ.get(THREADS_ENV, "").strip()
    if not text:
        return 0
    if not text.isdigit():
        raise FarmFailure(f"{THREADS_ENV}={text!r} is not a whole number of threads: fix the pipeline's "
                          "transform.env, or run `farm deploy` again (it sets it from resource_requests.cpu)")
    return int(text)


def spec_threads(spec: dict) -> int:
    """The threads a pipeline's workers should use: its CPU request rounded up, at least 1; 0 without one.

    pachd passes no variable that tells user code its CPU request (pachyderm v2.7.0
    ``src/server/pps/server/worker_rc.go``, ``workerPodSpec``: the container env is
    ``transform.env`` plus pachd's own; docs/pachyderm_worker_rules.md section 7), and a
    request without a limit sets no CFS quota, so Blender would start a thread per core of
    the node and crowd the pods next to it. A fractional request rounds up, because it is
    a share of the node and not a cap; a CPU limit, where set, caps the count.
    """
    request = float(spec.get("resource_requests", {}).get("cpu") or 0)
    if request <= 0:
        return 0
    count = max(1, math.ceil(round(request, 3)))
    limit = float(spec.get("resource_limits", {}).get("cpu") or 0)
    return min(count, max(1, math.floor(round(limit, 3)))) if limit > 0 else count
