"""A local run's progress: datum completions turned into ``Progress`` snapshots for the caller.

The workers settle datums from many threads; this tracker counts them under one
lock and estimates the time left from the rates of tiles rendered and frames
merged in this run, so work resumed from the store does not make the estimate look
fast. Frames are merged while tiles render (``frame_merges``), so the estimate is
the later of the tiles' and the frames' own.
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
        self._merge_times: list[float] = []  # when each frame of this run settled

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

    def frame_settled(self, fresh: bool = True) -> None:
        """A frame was merged or failed to merge (``fresh``), or was found stored from an earlier run."""
        with self._lock:
            self.frames_merged += 1
            if fresh:
                self._merge_times.append(time.monotonic())
        self._emit()

    def done(self, frames_merged: int) -> None:
        with self._lock:
            self.stage_name = "done"
            self.frames_merged = frames_merged
        self._emit()

    def _emit(self) -> None:
        with self._lock:
            progress = Progress(self.stage_name, self.tiles_done, self.tiles_total, self.tiles_failed,
                                self.frames_merged, self.frames_total, self._eta())
        self.on_progress(progress)

    def _eta(self) -> float | None:
        """Seconds left: the tiles at their rate, and the frames at theirs once two have merged."""
        if self.stage_name not in ("renderer", "merger") and not self.stage_name.startswith("renderer"):
            return None
        now = time.monotonic()
        estimates = []
        rendered = self.tiles_done - self._skipped
        if rendered > 0:
            estimates.append((self.tiles_total - self.tiles_done) / (rendered / max(1e-6, now - self._started)))
        if len(self._merge_times) >= 2:
            # Frames merge as their tiles finish: their pace includes rendering, and it is what an artist waits for.
            span = max(1e-6, self._merge_times[-1] - self._merge_times[0])
            pace = span / (len(self._merge_times) - 1)
            estimates.append(max(0.0, (self.frames_total - self.frames_merged) * pace - (now - self._merge_times[-1])))
        elif self.stage_name == "merger" and self._merge_times:
            estimates.append((self.frames_total - self.frames_merged) * max(1e-6, now - self._started)
                             / max(1, len(self._merge_times)))
        return max(estimates) if estimates else None
