"""One output folder holds one job's frames: a second, different scene into it is refused in one line.

Frames are named by number only (``000001.png``), so two scenes rendered into the same
folder would overwrite each other's frames, silently and frame by frame. The first
frame a job delivers writes a small claim file beside its frames; a later job of
another name (another scene file or scene) is then refused before anything renders.
The same job again (a rerun, an edited scene) may write there: it replaces its own frames.
"""

from __future__ import annotations

import json
from pathlib import Path

from farm_pipelines.atomic_files import write_text
from farm_pipelines.errors import BadInput
from farm_pipelines.job import Job

#: The claim file in an output folder.
CLAIM = ".pachyderm-farm-job.json"


def check(out_dir: Path, job: Job) -> None:
    """Refuse ``out_dir`` if another job's frames are in it."""
    claim = out_dir / CLAIM
    try:
        owner = json.loads(claim.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no claim (a new folder, or one the farm never wrote frames to)
    if owner.get("job") != job.name:
        raise BadInput(f"{out_dir}: holds the frames of another job ({owner.get('display_name', '?')!r}); "
                       "choose another output folder (--out) or empty that one, so neither overwrites the other")


def claim(out_dir: Path, job: Job) -> None:
    """Mark ``out_dir`` as holding ``job``'s frames; done once, with its first frame."""
    path = out_dir / CLAIM
    if not path.exists():
        write_text(path, json.dumps({"job": job.name, "display_name": job.display_name}))
