"""What ``farm render`` shows while it works: a tqdm bar on a terminal, a plain log line elsewhere.

On a terminal, tqdm draws the bar, measures the rate and the time left, fits the
width of the window and keeps messages above the bar (``tqdm.write``). When stderr
is a file or a pipe, a bar's carriage returns would make a mess of the log, so the
same facts go out as one plain line every few seconds, or at each change of stage.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

from farm_pipelines.backend import Progress
from farm_pipelines.events import Caution, Detail, FarmEvent, Info, ProgressUpdate

#: Seconds between two plain log lines of the same stage.
LOG_EVERY_S = 5


class TerminalProgress:
    """Turns the farm's events into the CLI's output on ``stream`` (stderr)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._bar: tqdm | None = None
        self._stage = ""
        self._last = 0.0

    def event(self, event: FarmEvent) -> None:
        if isinstance(event, Info | Detail):  # a terminal shows how the farm goes about the job too
            self._message(event.message)
        elif isinstance(event, Caution):
            self._message(f"warning: {event.message}")
        elif isinstance(event, ProgressUpdate):
            (self._draw if self.tty else self._log)(event.progress)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _draw(self, p: Progress) -> None:
        if self._bar is None or (p.tiles_total or None) != self._bar.total:
            # Tiles resumed from an earlier run are the bar's start, so they do not inflate the rate.
            self.finish()
            self._bar = tqdm(total=p.tiles_total or None, initial=p.tiles_done, unit="tile", file=self.stream,
                             dynamic_ncols=True, leave=True,
                             bar_format="{desc:8} {percentage:3.0f}%|{bar}| tiles {n_fmt}/{total_fmt}"
                                        "{postfix} [{elapsed}<{remaining}]")
        self._stage = p.stage
        bar = self._bar
        bar.set_description_str(p.stage, refresh=False)
        failed = f" ({p.tiles_failed} failed)" if p.tiles_failed else ""
        bar.set_postfix_str(f"frames {p.frames_merged}/{p.frames_total}{failed}", refresh=False)
        bar.update(max(0, p.tiles_done - bar.n))
        bar.refresh()

    def _log(self, p: Progress) -> None:
        now = time.monotonic()
        if p.stage == self._stage and now - self._last < LOG_EVERY_S:
            return
        self._last, self._stage = now, p.stage
        width = 24
        filled = int(width * p.fraction)
        eta = f" ETA {duration(p.eta_seconds)}" if p.eta_seconds is not None else ""
        failed = f" ({p.tiles_failed} failed)" if p.tiles_failed else ""
        print(f"[{'#' * filled}{'.' * (width - filled)}] {p.stage:8} tiles {p.tiles_done}/{p.tiles_total}"
              f"{failed} frames {p.frames_merged}/{p.frames_total}{eta}", file=self.stream, flush=True)


def duration(seconds: float) -> str:
    """``1:15``, or ``1:02:03`` from an hour up."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"
