"""Shared machines crash and get killed: real processes, real kills, frames still right."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import FARM, ROOT, farm, make_scene, max_difference, render_whole

HANG_HOOK = ROOT / "tests" / "hang_hook"


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, dict[int, Path]]:
    folder = tmp_path_factory.mktemp("faults")
    blend = make_scene(folder / "scene.blend", size=[96, 64], samples=64, frames=[1, 2])
    return blend, render_whole(blend, folder / "whole", [1, 2])


def _renderer_workers(parent: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(parent), "-f", "farm_pipelines.pipelines.renderer"],
                           capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _assert_frames(out: Path, reference: dict[int, Path]) -> None:
    for frame, whole in reference.items():
        assert max_difference(out / f"{frame:06d}.png", whole) <= 1


def _datum_in_flight(pid: int, state: Path) -> bool:
    """True if the worker holds a tile that is handed out but not yet committed.

    Call it with the worker stopped: a hand-off already under way then finishes
    while the worker cannot move, and what its /pfs/.env names is what it holds.
    """
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pfs = next(v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"FARM_PFS="))
    env = Path(pfs, ".env")
    if not env.exists():
        return False
    datum = re.search(r"^PACH_DATUM_ID=(\w+)$", env.read_text(), re.M)
    return bool(datum) and not (state / "datums" / "renderer" / datum.group(1)).exists()


def _stop_a_worker_holding_a_tile(run: subprocess.Popen, state: Path) -> int | None:
    """Once a few tiles are stored, SIGSTOP renderer workers in turn until one holds a tile in flight.

    That one is returned still stopped (the others are resumed), or None if the run
    ended or two minutes passed first.
    """
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        stored = state / "datums" / "renderer"
        started = stored.exists() and len(list(stored.iterdir())) >= 4
        for worker in _renderer_workers(run.pid) if started else []:
            os.kill(worker, signal.SIGSTOP)
            time.sleep(0.05)
            if _datum_in_flight(worker, state):
                return worker
            os.kill(worker, signal.SIGCONT)
        time.sleep(0.02)
    return None


def test_worker_killed_mid_tile_is_retried_elsewhere(tmp_path, state, scene):
    blend, reference = scene
    env = dict(os.environ, FARM_STATE_DIR=str(state))
    run = subprocess.Popen([*FARM, "render", str(blend), "--tile", "16", "--workers", "2",
                            "--out", str(tmp_path / "out")], env=env, stderr=subprocess.PIPE, text=True)
    worker = _stop_a_worker_holding_a_tile(run, state)
    assert worker is not None, "no renderer worker to kill"
    os.kill(worker, signal.SIGKILL)
    assert run.wait(timeout=300) == 0, run.stderr.read()
    log = "".join(p.read_text() for p in (state / "logs" / "renderer").rglob("*.log"))
    assert "worker process died" in log
    _assert_frames(tmp_path / "out", reference)


def test_truncated_tile_on_disk_is_rendered_again(tmp_path, state, scene):
    blend, reference = scene
    args = ["render", blend, "--tile", "32", "--out", tmp_path / "out"]
    assert farm(*args, state=state).returncode == 0
    tile = sorted((state / "datums" / "renderer").rglob("*.exr"))[0]
    tile.write_bytes(tile.read_bytes()[:100])

    again = farm(*args, state=state)

    assert again.returncode == 0, again.stderr
    assert re.search(r"renderer: 1 of 12 datum", again.stderr), again.stderr
    _assert_frames(tmp_path / "out", reference)


def _flip_bytes(path: Path, at: int, count: int = 4) -> None:
    """Damage a file in place without changing its size, as bit rot does."""
    data = bytearray(path.read_bytes())
    for i in range(at, at + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_tile_with_flipped_bytes_is_rendered_again_and_the_rerun_heals(tmp_path, state, scene):
    blend, reference = scene
    args = ["render", blend, "--tile", "32", "--out", tmp_path / "out"]
    assert farm(*args, state=state).returncode == 0
    tile = sorted((state / "datums" / "renderer").rglob("*.exr"))[3]
    _flip_bytes(tile, tile.stat().st_size // 2)
    again = farm(*args, state=state)
    assert again.returncode == 0, again.stderr
    assert "is damaged; the datum will run again" in again.stderr
    assert re.search(r"renderer: 1 of 12 datum", again.stderr), again.stderr
    _assert_frames(tmp_path / "out", reference)


def test_a_damaged_finished_frame_is_merged_again_before_it_is_delivered(tmp_path, state, scene):
    blend, reference = scene
    args = ["render", blend, "--tile", "32", "--out", tmp_path / "first"]
    assert farm(*args, state=state).returncode == 0
    frame = next((state / "datums" / "merger").rglob("000002.png"))
    _flip_bytes(frame, frame.stat().st_size - 40)  # inside the image data, same size
    again = farm("render", blend, "--tile", "32", "--out", tmp_path / "second", state=state)
    assert again.returncode == 0, again.stderr
    assert "merger: output" in again.stderr and "is damaged" in again.stderr
    assert re.search(r"renderer: \d+ of 12 datum", again.stderr) is None  # no tile rendered again
    _assert_frames(tmp_path / "second", reference)


def test_same_job_twice_at_once_does_not_corrupt(tmp_path, state, scene):
    blend, reference = scene
    env = dict(os.environ, FARM_STATE_DIR=str(state))
    results = []

    def run(name: str) -> None:
        results.append(subprocess.run([*FARM, "render", str(blend), "--tile", "32", "--out", str(tmp_path / name)],
                                      env=env, capture_output=True, text=True, timeout=300))

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    for name in ("a", "b"):
        _assert_frames(tmp_path / name, reference)


def test_worker_older_than_the_scene_refuses_and_newer_warns():
    script = ("import sys\nfrom farm_pipelines.blender.render_tile import check_version\n"
              "check_version((4, 2, 0))\ncheck_version((99, 0, 0))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "warning: scene saved with Blender 4.2.0" in done.stderr
    assert "older than the 99.0.0 the scene was saved with" in done.stderr and done.returncode != 0


def _hang_env(state: Path, pids: Path, hang: str) -> dict[str, str]:
    """The farm's environment with one of its processes made to hang for real (tests/hang_hook)."""
    pids.mkdir()
    path = os.pathsep.join(p for p in (str(HANG_HOOK), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, FARM_STATE_DIR=str(state), FARM_STALL_SECONDS="5", PYTHONPATH=path,
                FARM_TEST_HANG=hang, FARM_TEST_HANG_PIDS=str(pids))


def _gone(pids: Path) -> bool:
    """Every process that was made to hang has been ended (and reaped: no zombie left)."""
    return all(not Path(f"/proc/{pid.name}").exists() for pid in pids.iterdir())


def test_prepare_that_never_exits_after_its_result_is_ended_and_the_job_runs(tmp_path, state, scene):
    blend, reference = scene
    pids = tmp_path / "hung"
    env = _hang_env(state, pids, "farm_pipelines.blender.prepare:exit")
    done = subprocess.run([*FARM, "render", str(blend), "--tile", "32", "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(list(pids.iterdir())) == 1 and _gone(pids)
    _assert_frames(tmp_path / "out", reference)


def test_prepare_that_hangs_is_ended_and_reported_in_one_line(tmp_path, state, scene):
    blend, _ = scene
    pids = tmp_path / "hung"
    env = _hang_env(state, pids, "farm_pipelines.blender.prepare:start")
    done = subprocess.run([*FARM, "render", str(blend), "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Blender preparing scene.blend stopped responding" in lines[0], done.stderr
    assert "FARM_STALL_SECONDS" in lines[0] and "Traceback" not in done.stderr
    assert _gone(pids) and not (tmp_path / "out").exists()


def test_renderer_that_cannot_start_is_ended_and_reported_in_one_line(tmp_path, state, scene):
    blend, _ = scene
    pids = tmp_path / "hung"
    env = _hang_env(state, pids, "farm_pipelines.pipelines.renderer:start")
    done = subprocess.run([*FARM, "render", str(blend), "--tile", "32", "--workers", "1",
                           "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "worker cannot start" in last and "renderer worker" in last and "stopped responding while starting" \
        in last, done.stderr
    assert len(list(pids.iterdir())) >= 3 and _gone(pids)


def test_worker_that_stops_responding_mid_tile_is_ended_and_its_tile_retried(tmp_path, state, scene):
    """SIGSTOP and never SIGCONT: the worker holds its tile and uses no CPU, like a deadlocked Blender."""
    blend, reference = scene
    env = dict(os.environ, FARM_STATE_DIR=str(state), FARM_STALL_SECONDS="5")
    run = subprocess.Popen([*FARM, "render", str(blend), "--tile", "16", "--workers", "2",
                            "--out", str(tmp_path / "out")], env=env, stderr=subprocess.PIPE, text=True)
    frozen = []
    try:
        worker = _stop_a_worker_holding_a_tile(run, state)  # left stopped for good
        frozen = [worker] if worker is not None else []
        assert frozen, "no renderer worker to stop"
        assert run.wait(timeout=300) == 0, run.stderr.read()
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        run.kill()
    log = "".join(p.read_text() for p in (state / "logs" / "renderer").rglob("*.log"))
    assert re.search(rf"renderer worker \(pid {frozen[0]}\) stopped responding on frame \d+ tile \d+", log), log
    assert not Path(f"/proc/{frozen[0]}").exists()
    _assert_frames(tmp_path / "out", reference)


def test_a_run_that_fails_before_merging_delivers_no_frame_of_an_older_scene(tmp_path, state):
    """Render, change the scene's size, render again while the splitter hangs: the failed run must not copy the
    first run's frames, which are of another scene, into --out."""
    blend = make_scene(tmp_path / "shot.blend", size=[64, 36], frames=[1, 2])
    first = farm("render", blend, "--whole-frame", "--out", tmp_path / "first", state=state)
    assert first.returncode == 0, first.stderr
    make_scene(blend, size=[128, 72], frames=[1, 2])
    pids = tmp_path / "hung"
    env = _hang_env(state, pids, "farm_pipelines.pipelines.splitter:start")
    done = subprocess.run([*FARM, "render", str(blend), "--whole-frame", "--out", str(tmp_path / "second")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "splitting failed" in done.stderr
    assert not (tmp_path / "second").exists() or not list((tmp_path / "second").iterdir())
    assert _gone(pids)
