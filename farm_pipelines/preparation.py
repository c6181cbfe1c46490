"""Preparing a job: from the artist's .blend to the job's self-contained folder and prepare's facts.

Blender (``farm_pipelines.blender.prepare``) checks the scene and saves a copy;
``dependencies.carry`` makes it self-contained; the scene folder is kept from the last
run while nothing that renders changed, so the renderer's datum hashes stay the same.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from farm_pipelines import blend_fingerprint, job_folder
from farm_pipelines.atomic_files import write_text
from farm_pipelines.carried import Carried
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
                source_folder: Path | None = None, out_dir: Path | None = None) -> tuple[Job, Path, dict]:
    """Check the scene and make its self-contained job folder; keep the previous scene if it renders the same.

    An ``auto`` tile size becomes a concrete one here, from the frame size and count
    prepare reports, the farm's ``workers`` and its per-tile ``costs`` (the local farm's by
    default; a cluster pays more per datum), so job.json always names a size.
    ``source_folder`` is the artist's scene folder (default: ``blend``'s; the add-on submits a copy
    saved elsewhere): no bake folder holding it is carried, and files from outside it are counted.
    ``out_dir`` is where the job's frames go: a frame from there that the scene shows as an image
    (the add-on loads finished frames) is neither carried nor named missing.
    Returns the job, its folder and prepare's facts, with ``carried``: what the folder holds
    besides the blend and what is missing (``--strict`` makes a missing file bad input).

    Blender's output is not byte-stable, so the scene folder (blend and files) is kept while
    the scene fingerprint (what renders: ``job_folder.scene_fingerprint``) is the same; other
    settings then only rewrite ``job.json``, which the renderer does not read, so the renderer's
    datum hashes stay the same and only missing tiles are rendered. Carried files are hard
    links into ``prepared/.files``, where each content is stored once.
    """
    folder = prepared_root / job.name
    prepared_root.mkdir(parents=True, exist_ok=True)
    store = FileStore(prepared_root / ".files")
    with tempfile.TemporaryDirectory(dir=prepared_root, prefix=".staging-") as staging:
        saved = Path(staging) / "saved" / "scene.blend"
        saved.parent.mkdir()
        facts = _run_prepare(blend, saved, job.settings, host)
        fresh = Path(staging) / "job"
        carried = carry(saved, job_folder.scene_blend(fresh), store, facts.pop("users"),
                        source_folder=source_folder or blend.parent, out_dir=out_dir)
        if carried.missing and job.settings.strict:
            raise BadInput(f"{blend}: missing files: {'; '.join(carried.missing)} "
                           "(drop --strict to render without them)")
        speeds_here = speeds(facts["gpu"]) if speeds else [1.0] * workers
        settings = _resolve_tile(job.settings, facts, speeds_here, costs or Costs.from_env())
        rendered = blend_fingerprint.fingerprint(job_folder.scene_blend(fresh), skip_image=job_folder.not_carried)
        fingerprint = job_folder.scene_fingerprint(rendered, carried)
        job = Job(job.name, job.display_name, settings, fingerprint, tuple(facts["saved_with"]))
        text = json.dumps(job.to_json(), indent=1, ensure_ascii=False)
        if _same_scene(folder, carried, fingerprint, rendered):
            if job_folder.job_json(folder).read_text(encoding="utf-8") != text:
                write_text(job_folder.job_json(folder), text)  # a new inode: links to the old one keep it
        else:
            write_text(job_folder.job_json(fresh), text)
            job_folder.swap_in(fresh, folder)
    facts["carried"] = carried
    return job, folder, facts


def _same_scene(folder: Path, carried: Carried, fingerprint: str, rendered: str) -> bool:
    """Whether the job folder of the last run holds this scene and every carried file, with a readable job.json.

    Its blend is fingerprinted again (``rendered`` is the fresh copy's), so one damaged on disk
    is replaced, and running the same command again heals it.
    """
    if not (job_folder.holds_scene(folder, carried) and job_folder.job_json(folder).is_file()):
        return False
    try:
        return (Job.load(job_folder.job_json(folder)).source_fingerprint == fingerprint
                and blend_fingerprint.fingerprint(job_folder.scene_blend(folder), job_folder.not_carried) == rendered)
    except (ValueError, KeyError, TypeError, BadInput, *blend_fingerprint.UNREADABLE):  # damaged: made again
        return False


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
