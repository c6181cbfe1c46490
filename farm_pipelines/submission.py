"""From a .blend on disk to frames in a folder: check, make self-contained, submit, follow, fetch.

The CLI and the add-on both call ``render``; it blocks, so the add-on runs it on
a background thread and turns the events it emits (``farm_pipelines.events``) into
UI updates on the main thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from farm_pipelines import job_folder, out_claim
from farm_pipelines.atomic_files import write_text
from farm_pipelines.backend import Backend
from farm_pipelines.blend_file import check_blend_path
from farm_pipelines.dependencies import Carried, carry
from farm_pipelines.errors import BadInput, FarmFailure
from farm_pipelines.events import Caution, Detail, Done, FarmEvent, FrameDone, Info, ProgressUpdate
from farm_pipelines.file_store import FileStore
from farm_pipelines.host import Host
from farm_pipelines.job import Job, JobSettings, job_name_for
from farm_pipelines.job_lock import job_lock
from farm_pipelines.local.farm import LocalFarm, default_state_dir
from farm_pipelines.pipelines import load_spec
from farm_pipelines.tile_size import Costs, Shot, choose
from farm_pipelines.tiles import Box


def render(blend: Path, settings: JobSettings, out_dir: Path, *, backend: Backend | None = None,
           workers: int | None = None, host: Host | None = None,
           on_event: Callable[[FarmEvent], None] | None = None, cancel: threading.Event | None = None,
           display_name: str | None = None, state_dir: Path | None = None,
           gpu_backend: str | None = None, source_folder: Path | None = None) -> list[Path]:
    """Render ``blend`` on the farm into ``out_dir/<frame:06d>.<ext>``; returns the frame paths.

    ``source_folder`` is the artist's scene folder when ``blend`` is a copy saved elsewhere (the add-on's).
    ``gpu_backend`` is the local farm's Cycles backend for GPU scenes (``gpu.parse_backend``;
    default ``FARM_GPU_BACKEND``, else auto); a cluster's is set by ``farm deploy --gpu-backend``.

    Raises ``BadInput`` before anything is written if the scene or the settings
    are unusable, and ``FarmFailure`` (after fetching every good frame) if
    tiles or frames failed.
    """
    emit = on_event or (lambda event: None)
    cancel = cancel or threading.Event()
    host = host or Host()
    blend = check_blend_path(Path(blend))
    out_dir = check_out_dir(Path(out_dir))
    state = Path(state_dir) if state_dir else default_state_dir()
    backend = backend or LocalFarm(state, workers=workers, host=host, log=lambda message: emit(Detail(message)),
                                   faithful=os.environ.get("FARM_FAITHFUL") == "1",
                                   warn=lambda message: emit(Caution(message)), gpu_backend=gpu_backend)
    display = display_name or blend.stem
    job = Job(job_name_for(display, str(blend)), display, settings)
    _check_state_dir(state)
    out_claim.check(state, out_dir, job)
    with _disk_full_is_failure(f"writing farm state in {state}"), \
            job_lock(state, job.name, lambda message: emit(Info(message))), \
            backend.starting(job.name):
        return _submit(blend, job, out_dir, state, backend, host, emit, cancel, source_folder)


def _submit(blend: Path, job: Job, out_dir: Path, state: Path, backend: Backend, host: Host,
            emit: Callable[[FarmEvent], None], cancel: threading.Event,
            source_folder: Path | None = None) -> list[Path]:
    asked = job.settings.tile
    costs = Costs.from_env(cluster=not isinstance(backend, LocalFarm))
    job, job_files, facts = prepare_job(blend, job, state / "prepared", host, worker_count(backend), costs,
                                        speeds=lambda gpu_scene: worker_speeds(backend, gpu_scene),
                                        source_folder=source_folder)
    if asked.auto:
        width, height = facts["frame_size"]
        fast = sum(speed > 1 for speed in worker_speeds(backend, facts["gpu"]))
        emit(Info(f"tile size auto: {job.settings.tile} for {len(facts['frames'])} frame(s) "
                  f"of {width}x{height} on {worker_count(backend)} worker(s)"
                  + (f", {fast} of them GPU" if fast else "")))
    carried: Carried = facts["carried"]
    if carried.files:  # a scene with no external file has nothing to say here
        emit(Info(carried.summary()))
    for missing in carried.missing:
        emit(Caution(f"missing file: {missing} (the farm renders without it)"))

    frames: list[Path] = []

    def on_frame(frame: int, path: Path) -> None:
        if not frames:
            out_claim.claim(state, out_dir, job)
        frames.append(path)
        emit(FrameDone(frame, path))

    try:
        backend.run(job, job_files, lambda progress: emit(ProgressUpdate(progress)), cancel)
    except FarmFailure:
        if not cancel.is_set():  # keep the frames that did finish, then report what failed
            with contextlib.suppress(FarmFailure, OSError):  # the run's error says more than the fetch's
                backend.fetch_frames(job, out_dir, on_frame)
        raise
    with _disk_full_is_failure(f"writing frames to {out_dir}"):
        errors = backend.fetch_frames(job, out_dir, on_frame)
    if errors:
        raise FarmFailure(f"{len(errors)} frame(s) failed; {errors[0]}")
    emit(Done(f"{len(frames)} frame(s) in {out_dir}"))
    return frames


@contextmanager
def _disk_full_is_failure(doing: str) -> Iterator[None]:
    """A full disk is one clear line, not a traceback; atomic writes have already removed their temp files."""
    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise FarmFailure(f"disk full while {doing}; free some space and run the same command again "
                          "to resume") from None


def worker_speeds(backend: Backend, gpu_scene: bool) -> list[float]:
    """Each renderer worker's speed for ``--tile auto``, 1 being a CPU worker (``tile_size``'s model):
    the local farm's GPU workers count as ``gpu.GPU_SPEED`` for a scene that asks for a GPU."""
    if isinstance(backend, LocalFarm):
        return backend.speeds(gpu_scene)
    return [1.0] * worker_count(backend)


def worker_count(backend: Backend) -> int:
    """Workers the renderer gets: the local farm's, or the parallelism the cluster's spec asks for."""
    if isinstance(backend, LocalFarm):
        return backend.workers
    return int(load_spec("renderer").get("parallelism_spec", {}).get("constant", 1))


def _check_state_dir(state: Path) -> None:
    """The farm's state must be creatable: a bad --state-dir is bad input, not a traceback."""
    try:
        state.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=state, prefix=".farm-probe-"):
            pass
    except OSError as error:
        raise BadInput(f"{state}: the farm's state directory cannot be used ({error.strerror}); "
                       f"choose another --state-dir or FARM_STATE_DIR") from None


def check_out_dir(out_dir: Path) -> Path:
    """Make sure frames can be written there, without creating anything yet."""
    out_dir = out_dir.expanduser().absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"{out_dir}: exists and is not a directory; choose another --out")
    probe_dir = out_dir
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise BadInput(f"{out_dir}: cannot be created because {probe_dir} is a file; choose another --out")
    try:
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".farm-probe-"):
            pass
    except OSError as error:
        raise BadInput(f"{out_dir}: cannot be written ({error.strerror}); choose another --out") from None
    return out_dir


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
