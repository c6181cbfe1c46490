"""One output folder holds one job's frames: a second, different scene into it is refused in one line.

Frames are named by number only (``000001.png``), so two scenes rendered into the same
folder would overwrite each other's frames, silently and frame by frame. The first
frame a job delivers records, in the farm's state (never in the user's folder), which
job the folder's frames belong to; a later job of another name (another scene file or
scene) is then refused before anything renders, while the folder still holds frames.
The same job again (a rerun, an edited scene) may write there: it replaces its own frames.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from farm_pipelines.atomic_files import write_text
from farm_pipelines.errors import BadInput
from farm_pipelines.job import Job

_FRAME = re.compile(r"^-?\d+\.\w+$")  # ``000001.png``, ``-00003.exr``: what the farm delivers


def _record(state: Path, out_dir: Path) -> Path:
    return state / "out-claims" / f"{hashlib.sha256(str(out_dir).encode()).hexdigest()[:24]}.json"


def check(state: Path, out_dir: Path, job: Job) -> None:
    """Refuse ``out_dir`` if it holds frames another job delivered there."""
    try:
        owner = json.loads(_record(state, out_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # the farm never delivered frames there
    if owner.get("job") == job.name or not out_dir.is_dir():
        return
    if any(_FRAME.match(path.name) for path in out_dir.iterdir()):
        raise BadInput(f"{out_dir}: holds the frames of another job ({owner.get('display_name', '?')!r}); "
                       "choose another output folder (--out) or empty that one, so neither overwrites the other")


def claim(state: Path, out_dir: Path, job: Job) -> None:
    """Record that ``out_dir`` holds ``job``'s frames; done with its first frame."""
    write_text(_record(state, out_dir), json.dumps({"job": job.name, "display_name": job.display_name,
                                                    "folder": str(out_dir)}))
