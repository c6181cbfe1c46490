"""The farm's events, as the terminal shows them: one line per kind, the same lines as before they were typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm_pipelines import events
from farm_pipelines.backend import Progress
from farm_pipelines.terminal_progress import TerminalProgress


def test_every_kind_prints_as_the_cli_always_printed_it(capsys: pytest.CaptureFixture) -> None:
    bar = TerminalProgress()
    assert not bar.tty, "pytest captures stderr, so this is the log-file form"
    for event in [
        events.Info("tile size auto: 32x32 for 2 frame(s) of 64x48 on 2 worker(s)"),
        events.Detail("renderer: 12 of 12 datum(s) to process"),
        events.Caution("missing file: /textures/gone.png (the farm renders without it)"),
        events.ProgressUpdate(Progress("renderer", tiles_done=6, tiles_total=12, frames_total=2, eta_seconds=75)),
        events.FrameDone(1, Path("/frames/000001.png")),
        events.Done("2 frame(s) in /frames"),
    ]:
        bar.event(event)
    bar.finish()
    assert capsys.readouterr().err.splitlines() == [
        "tile size auto: 32x32 for 2 frame(s) of 64x48 on 2 worker(s)",
        "renderer: 12 of 12 datum(s) to process",
        "warning: missing file: /textures/gone.png (the farm renders without it)",
        "[##########..............] renderer tiles 6/12 frames 0/2 ETA 1:15",
    ]

