"""A local run's progress: datum completions turned into ``Progress`` snapshots for the caller.

The workers settle datums from many threads; this tracker counts them under one
lock and estimates the time left from the rate of tiles rendered in this run, so
tiles resumed from the store do not make the estimate look fast.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from farm_pipelines.backend import Progress


class ProgressTracker:
    """Turns datum completions into ``Progress`` snapshots, with an ETA from the tile rate."""

    def __init__(self) -> None:
        self.on_progress: Callable[[Progress], None] = lambda progress: None  # set once a caller listens
        self._lock = threading.Lock()
        self.stage_name = "splitter"
        self.tiles_total = self.tiles_done = self.tiles_failed = 0
        self.frames_total = self.frames_merged = 0
        self._started = time.monotonic()
        self._skipped = 0

    def stage(self, name: str, total: int, done: int) -> None:
        with self._lock:
            self.stage_name = name
            if name == "renderer":
                self.tiles_total, self.tiles_done, self._skipped = total, done, done
                self._started = time.monotonic()
            elif name.startswith("renderer"):  # a mixed cluster's second renderer adds its share of tiles
                self.tiles_total, self.tiles_done, self._skipped = (
                    self.tiles_total + total, self.tiles_done + done, self._skipped + done)
        self._emit()

    def datum_settled(self, pipeline: str, failed: bool) -> None:
        with self._lock:
            if pipeline.startswith("renderer"):
                self.tiles_done += 1
                self.tiles_failed += int(failed)
        self._emit()

    def done(self, frames_merged: int) -> None:
        with self._lock:
            self.stage_name = "done"
            self.frames_merged = frames_merged
        self._emit()

    def _emit(self) -> None:
        with self._lock:
            eta = None
            rendered = self.tiles_done - self._skipped
            if self.stage_name.startswith("renderer") and rendered > 0:
                rate = rendered / max(1e-6, time.monotonic() - self._started)
                eta = (self.tiles_total - self.tiles_done) / rate
            progress = Progress(self.stage_name, self.tiles_done, self.tiles_total, self.tiles_failed,
                                self.frames_merged, self.frames_total, eta)
        self.on_progress(progress)
