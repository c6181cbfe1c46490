"""The faithful farm's run: each part of a job as one commit set, its stages by a pachd worker's rules.

On Pachyderm a job's frames can be read only once its merger job is done, so a long
job goes up in parts (``job_parts``), one commit each, and each part's frames are
delivered as its commit set finishes. The faithful farm does the same, part after part,
so what it shows of frames landing is what a cluster shows.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from farm_pipelines import job_folder, job_parts
from farm_pipelines.atomic_files import write_text
from farm_pipelines.backend import Progress
from farm_pipelines.errors import FarmFailure
from farm_pipelines.job import Job
from farm_pipelines.local.faithful import FaithfulStage
from farm_pipelines.local.pachd_rules import new_id
from farm_pipelines.local.progress import ProgressTracker
from farm_pipelines.local.scheduler import describe_datum
from farm_pipelines.pipelines import PIPELINES, load_spec

if TYPE_CHECKING:
    from farm_pipelines.local.farm import LocalFarm


def run_in_parts(farm: LocalFarm, job: Job, job_files: Path, on_progress: Callable[[Progress], None],
                 cancel: threading.Event, on_frame: Callable[[int, Path], None] | None,
                 plan: job_parts.FramePlan | None) -> None:
    """Run the job's parts one commit set after another, handing each part's frames to ``on_frame``
    once its merger job is done; ``farm.parts`` names their job folders. Without ``on_frame`` the job
    is one part. Tiles lost (recovered by ``err_cmd``) fail the run once every part has run."""
    least = job_parts.min_tiles(farm.specs.get("renderer") or load_spec("renderer"), farm.workers)
    parts = job_parts.split(job, plan, least) if on_frame else [job]
    farm.parts[job.name] = [part.name for part in parts]  # before they run: a failed run fetches from them
    tracker = ProgressTracker()
    tracker.on_progress = on_progress
    tracker.frames_total = len(plan.frames) if plan else 0
    lost = []
    for part in parts:
        if part is job:
            lost += run_commit_set(farm, job, job_files, tracker, cancel)
        else:
            farm.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=farm.root, prefix=".part-") as folder:
                lost += run_commit_set(farm, part, _part_folder(part, job_files, Path(folder)), tracker, cancel)
        for frame, path in farm.merged_frames(part.name) if on_frame else []:
            on_frame(frame, path)
    tracker.done(sum(len(farm.merged_frames(part.name)) for part in parts))
    if lost:  # the job succeeded; name what it lost with its own error line, as describe() does
        first = lost[0]
        raise FarmFailure(f"{len(lost)} tile(s) failed after retries, every other frame landed; first: "
                          f"{describe_datum(first.datum.key())} (datum {first.id}): {first.error}")


def run_commit_set(farm: LocalFarm, job: Job, job_files: Path, tracker: ProgressTracker,
                   cancel: threading.Event) -> list:
    """The DAG as pachd runs one commit set: one 32-hex ID for the job and all its commits
    (``pachd_rules.new_id``). A stage with a failed datum fails its job once all its sets are
    done (``registry.go``, ``processDatums`` -> ``failJob``), and the next stage's job is then
    JOB_UNRUNNABLE (``processJobStarting`` -> ``failedInputs`` -> ``markJobUnrunnable``): it
    never runs, and the run fails in one line naming the failed datums. Returns the tiles the
    job lost (recovered by ``err_cmd``): the job succeeded without them."""
    farm.put_job(job, job_files)
    job_id = new_id()
    farm.log(f"job {job_id} (commit set of {job.name})")
    lost: list = []
    # A pipeline the packaged DAG lacks (a mixed cluster's ``renderer-gpu``) runs before the merger.
    extra = [name for name in farm.specs if name not in PIPELINES]
    dag = [*PIPELINES[:-1], *extra, PIPELINES[-1]]
    for name in dag:
        spec = farm.specs.get(name) or load_spec(name)
        result = FaithfulStage(farm, spec, job.name, job_id, tracker, cancel).run()
        lost += result.lost
        if cancel.is_set():
            raise FarmFailure("cancelled")
        if name == "splitter" and not tracker.frames_total:
            tracker.frames_total = len(list((farm.repos / "splitter" / job.name).glob("frames/*")))
        if result.failed:
            later = dag[dag.index(name) + 1:]
            first = result.failed[0]
            raise FarmFailure(
                f"{name} job {job_id} failed: {len(result.failed)} datum(s) failed ("
                + ", ".join(f"{d.id} {describe_datum(d.datum.key())}" for d in result.failed)
                + f"); first error: {first.error}"
                + (f"; the {', '.join(later)} job(s) are unrunnable" if later else ""))
    return lost


def _part_folder(part: Job, job_files: Path, folder: Path) -> Path:
    """A part's job folder in ``folder``: the job's files, linked, and the part's own job.json."""
    for rel in job_folder.files_of(job_files):
        if rel != job_folder.JOB_JSON:
            job_folder.link_or_copy(job_files / rel, folder / rel)
    write_text(job_folder.job_json(folder), json.dumps(part.to_json(), indent=1, ensure_ascii=False))
    return folder
