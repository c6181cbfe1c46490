"""The CLI's progress on a real terminal (a pseudo-terminal) and in a log: tqdm's bar, or plain lines."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import termios

from conftest import FARM, ROOT, farm, make_scene


def _run_on_a_terminal(argv: list[str], env: dict[str, str], columns: int = 120) -> tuple[int, str]:
    """Run ``argv`` with stderr on a pseudo-terminal of ``columns`` columns; its exit code and what it drew."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen(argv, stderr=slave, stdout=subprocess.DEVNULL, env=env, cwd=ROOT)
    os.close(slave)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other end is closed
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    return process.wait(timeout=300), drawn.decode("utf-8", "replace")


def test_on_a_terminal_tqdm_draws_the_bar_and_messages_stay_above_it(tmp_path, state):
    blend = make_scene(tmp_path / "scene.blend", size=[64, 32], frames=[1, 2])
    env = dict(os.environ, FARM_STATE_DIR=str(state))
    code, drawn = _run_on_a_terminal([*FARM, "render", str(blend), "--tile", "16", "--workers", "2",
                                      "--out", str(tmp_path / "out")], env)
    assert code == 0, drawn
    assert "\r" in drawn  # redrawn in place, not a line per update
    screens = [part.strip() for part in re.split(r"[\r\n]", drawn) if part.strip()]
    bars = [s for s in screens if re.match(r"^\S+\s+\d+%\|.*\| tiles \d+/\d+", s)]
    assert any(re.match(r"^renderer\s+\d+%\|.*\| tiles \d+/16, frames 0/2 \[", s) for s in bars), bars
    assert re.match(r"^done\s+100%\|█+\| tiles 16/16, frames 2/2 \[", bars[-1]), bars[-1]
    assert all(len(s) <= 120 for s in bars)  # fits the window
    # messages are whole lines of their own above the bar, never glued to it
    assert "renderer: 16 of 16 datum(s) to process" in screens


def test_in_a_log_the_same_facts_are_plain_lines(tmp_path, state):
    blend = make_scene(tmp_path / "scene.blend", size=[64, 32], frames=[1, 2])
    done = farm("render", blend, "--tile", "16", "--workers", "2", "--out", tmp_path / "out", state=state)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    assert re.search(r"^\[[#.]{24}\] renderer tiles \d+/16 frames 0/2", done.stderr, re.MULTILINE), done.stderr
