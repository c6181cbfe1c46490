"""Preparing a job: from the artist's .blend to the job's self-contained folder and prepare's facts.

Blender (``farm_pipelines.blender.prepare``) checks the scene and saves a copy;
``dependencies.carry`` makes it self-contained; the folder is kept from the last
run while nothing that renders changed, so the farm's datum hashes stay the same.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from farm_pipelines import job_folder
from farm_pipelines.atomic_files import write_text
from farm_pipelines.dependencies import carry
from farm_pipelines.errors import BadInput, FarmFailure
from farm_pipelines.file_store import FileStore
from farm_pipelines.host import Host
from farm_pipelines.job import Job, JobSettings
from farm_pipelines.tile_size import Costs, Shot, choose
from farm_pipelines.tiles import Box


def prepare_job(blend: Path, job: Job, prepared_root: Path, host: Host, workers: int,
                costs: Costs | None = None,
                speeds: Callable[[bool], list[float]] | None = None,
                source_folder: Path | None = None) -> tuple[Job, Path, dict]:
    """Check the scene and make its self-contained job folder; keep the previous one if nothing changed.

    An ``auto`` tile size becomes a concrete one here, from the frame size and count
    prepare reports, the farm's ``workers`` and its per-tile ``costs`` (the local farm's by
    default; a cluster pays more per datum), so job.json always names a size.
    ``source_folder`` is the artist's scene folder (default: ``blend``'s; the add-on submits a copy
    saved elsewhere): no bake folder holding it is carried, and files from outside it are counted.
    Returns the job, its folder and prepare's facts, with ``carried``: what the folder holds
    besides scene.blend and what is missing (``--strict`` makes a missing file bad input).

    Blender's output is not byte-stable, so the folder is kept while the source, every file
    it carries and the settings are the same: the farm's datum hashes then stay the same
    and a rerun only renders what is missing. Carried files are hard links into
    ``prepared/.files``, where each content is stored once.
    """
    folder = prepared_root / job.name
    prepared_root.mkdir(parents=True, exist_ok=True)
    store = FileStore(prepared_root / ".files")
    with tempfile.TemporaryDirectory(dir=prepared_root, prefix=".staging-") as staging:
        saved = Path(staging) / "saved" / "scene.blend"
        saved.parent.mkdir()
        facts = _run_prepare(blend, saved, job.settings, host)
        fresh = Path(staging) / "job"
        carried = carry(saved, fresh, store, facts.pop("users"), source_folder=source_folder or blend.parent)
        if carried.missing and job.settings.strict:
            raise BadInput(f"{blend}: missing files: {'; '.join(carried.missing)} "
                           "(drop --strict to render without them)")
        speeds_here = speeds(facts["gpu"]) if speeds else [1.0] * workers
        settings = _resolve_tile(job.settings, facts, speeds_here, costs or Costs.from_env())
        fingerprint = job_folder.fingerprint(blend, carried, settings)
        job = Job(job.name, job.display_name, settings, fingerprint, tuple(facts["saved_with"]))
        previous = folder / "job.json"
        if not (job_folder.holds(folder, carried) and Job.load(previous).source_fingerprint == fingerprint):
            write_text(fresh / "job.json", json.dumps(job.to_json(), indent=1, ensure_ascii=False))
            job_folder.swap_in(fresh, folder)
    facts["carried"] = carried
    return job, folder, facts


def _resolve_tile(settings: JobSettings, facts: dict, speeds: list[float], costs: Costs) -> JobSettings:
    if not settings.tile.auto:
        return settings
    shot = Shot(tuple(facts["frame_size"]), Box.from_list(facts["region"]), len(facts["frames"]), settings.overscan,
                settings.sample_chunks)
    return dataclasses.replace(settings, tile=choose(shot, speeds, costs))


def _run_prepare(blend: Path, destination: Path, settings: JobSettings, host: Host) -> dict:
    result = destination.with_name("prepare.json")
    code, stderr = host.run_to_result("farm_pipelines.blender.prepare",
                                      [str(blend), str(destination), json.dumps(settings.to_json()), str(result)],
                                      result, f"preparing {blend.name}")
    if code == 2:
        raise BadInput(_last_error(stderr) or f"{blend}: cannot be prepared")
    detail = _last_error(stderr) or f"Blender exited with code {code}"
    if code < 0:  # Blender crashed reading someone else's file
        raise BadInput(f"{blend}: Blender could not open it ({detail}); the file may be corrupt")
    if code != 0 or not result.exists():
        raise FarmFailure(f"{blend}: preparing the scene failed ({detail})")
    return json.loads(result.read_text(encoding="utf-8"))


def _last_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    return lines[-1][len("error:"):].strip() if lines else ""
