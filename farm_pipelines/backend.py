"""What a farm backend does, so the CLI and the add-on drive the local farm and Pachyderm alike."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from farm_pipelines.job import Job
from farm_pipelines.job_parts import FramePlan


@dataclass(frozen=True)
class Progress:
    """A snapshot for progress bars; counts cover the whole job, skipped (already done) work included."""

    stage: str  # "splitter", "renderer", "merger" or "done"
    tiles_done: int = 0
    tiles_total: int = 0
    tiles_failed: int = 0
    frames_merged: int = 0
    frames_total: int = 0
    eta_seconds: float | None = None

    @property
    def fraction(self) -> float:
        """0..1, weighting tiles as the bulk of the work and merging as the rest."""
        tiles = self.tiles_done / self.tiles_total if self.tiles_total else 0.0
        frames = self.frames_merged / self.frames_total if self.frames_total else 0.0
        return 0.9 * tiles + 0.1 * frames


class Backend(Protocol):
    """Runs the splitter -> renderer -> merger DAG for one job somewhere."""

    def starting(self, job_name: str) -> AbstractContextManager[None]:
        """Held while the job is being prepared, before ``run``: time to start workers early."""

    def run(self, job: Job, job_files: Path, on_progress: Callable[[Progress], None],
            cancel: threading.Event, on_frame: Callable[[int, Path], None] | None = None,
            plan: FramePlan | None = None) -> None:
        """Upload ``job_files`` (the job folder, ``job_folder``) as ``/<job.name>/`` of the ``blends``
        repo, then block until the merger has finished the job.

        ``on_frame(frame, file)`` is called with each frame merged while the job runs, as soon as
        the backend has it (a readable file, which the caller copies); ``fetch_frames`` then gets
        the rest. ``plan`` holds the job's frames as prepare resolved them: a backend that can
        deliver frames only per commit submits the job in parts of them (``job_parts``).
        Raises ``FarmFailure`` (one clear line, naming failed tiles) or ``BadInput``.
        """

    def fetch_frames(self, job: Job, out_dir: Path, on_frame: Callable[[int, Path], None],
                     skip: frozenset[int] = frozenset()) -> list[str]:
        """Copy or download every merged frame not in ``skip`` into ``out_dir/<frame:06d>.<ext>``
        atomically, calling ``on_frame(frame, path)`` after each. Returns the merger's per-frame
        errors, if any (``merged_frames``).
        """
