"""From a .blend on disk to frames in a folder: check, make self-contained, submit, follow, fetch.

The CLI and the add-on both call ``render``; it blocks, so the add-on runs it on
a background thread and turns the events it emits (``farm_pipelines.events``) into
UI updates on the main thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from farm_pipelines import movie, out_claim
from farm_pipelines.atomic_files import copy_file
from farm_pipelines.backend import Backend
from farm_pipelines.blend_file import check_blend_path
from farm_pipelines.dependencies import Carried
from farm_pipelines.errors import BadInput, FarmFailure
from farm_pipelines.events import Caution, Detail, Done, FarmEvent, FrameDone, Info, ProgressUpdate
from farm_pipelines.host import Host
from farm_pipelines.job import Job, JobSettings, job_name_for
from farm_pipelines.job_lock import job_lock
from farm_pipelines.job_parts import FramePlan
from farm_pipelines.local.farm import LocalFarm, default_state_dir
from farm_pipelines.pipelines import load_spec
from farm_pipelines.preparation import prepare_job
from farm_pipelines.tile_size import Costs
from farm_pipelines.tiles import Box, split


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
                                        source_folder=source_folder, out_dir=out_dir)
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
    if facts.get("outside"):
        emit(Caution(facts["outside"]))
    if facts.get("movie"):
        emit(Info(movie.describe(facts["movie"])))

    frames: dict[int, Path] = {}
    lock = threading.Lock()

    def on_frame(frame: int, path: Path) -> None:
        with lock:
            if not frames:
                out_claim.claim(state, out_dir, job)
            frames[frame] = path
        emit(FrameDone(frame, path))

    def on_merged(frame: int, merged: Path) -> None:
        """A frame merged while the job runs: into ``out_dir`` at once, under a temporary name first."""
        destination = out_dir / merged.name
        with _disk_full_is_failure(f"writing frames to {out_dir}"):
            copy_file(merged, destination)
        on_frame(frame, destination)

    try:
        backend.run(job, job_files, lambda progress: emit(ProgressUpdate(progress)), cancel, on_merged,
                    FramePlan(facts["frames"], facts["scene_start"], tiles_per_frame(job, facts)))
    except FarmFailure:
        if not cancel.is_set():  # keep the frames that did finish, then report what failed
            with contextlib.suppress(FarmFailure, OSError):  # the run's error says more than the fetch's
                backend.fetch_frames(job, out_dir, on_frame, frozenset(frames))
        raise
    with _disk_full_is_failure(f"writing frames to {out_dir}"):
        errors = backend.fetch_frames(job, out_dir, on_frame, frozenset(frames))
    if errors:
        raise FarmFailure(f"{len(errors)} frame(s) failed; {errors[0]}")
    delivered = [frames[frame] for frame in sorted(frames)]
    encoded = None
    if facts.get("movie"):  # the scene writes a movie: encoded from the frames, as Flamenco's preview video
        encoded = movie.encode_movie(delivered, facts["movie"], out_dir, lambda message: emit(Caution(message)))
        if encoded:
            emit(Info(f"movie: {encoded}"))
    emit(Done(f"{len(frames)} frame(s) in {out_dir}" + (f", and the movie {encoded.name}" if encoded else "")))
    return delivered


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


def tiles_per_frame(job: Job, facts: dict) -> int:
    """About how many tiles each frame of the job makes (the render region counted whole)."""
    width, height = facts["frame_size"]
    tile = job.settings.tile
    pieces = 1 if tile.width is None else len(split(Box(0, 0, width, height), tile.width, tile.height))
    return pieces * job.settings.sample_chunks


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
