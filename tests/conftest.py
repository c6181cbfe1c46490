"""Shared fixtures: real scenes built with bpy, real renders, real farm runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
import cv2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED_SCENES = ROOT.parent / "shared" / "scenes"
FARM = [sys.executable, "-m", "farm_pipelines.cli"]


def make_scene(path: Path, **options) -> Path:
    """Build a small scene (see tests/scene_builder.py) in its own Blender process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(ROOT / "tests" / "scene_builder.py"), str(path), json.dumps(options)],
                   check=True, capture_output=True)
    return path


def render_whole(blend: Path, out_dir: Path, frames: list[int]) -> dict[int, Path]:
    """Plain Blender: one process, whole frames, the scene's own output settings."""
    script = (
        "import bpy, sys\n"
        "bpy.ops.wm.open_mainfile(filepath=sys.argv[-3], load_ui=False, use_scripts=False)\n"
        "scene = bpy.context.scene\n"
        "for frame in [int(f) for f in sys.argv[-1].split(',')]:\n"
        "    scene.frame_set(frame)\n"
        "    scene.render.filepath = f'{sys.argv[-2]}/{frame:06d}'\n"
        "    bpy.ops.render.render(write_still=True)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(blend), str(out_dir), ",".join(map(str, frames))],
                   check=True, capture_output=True)
    return {f: next(out_dir.glob(f"{f:06d}.*")) for f in frames}


def farm(*args: str, state: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, FARM_STATE_DIR=str(state))
    return subprocess.run([*FARM, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT)


def kill_farm_when(*args: str, state: Path, ready: Callable[[], bool], timeout: float = 120) -> None:
    """Run ``farm ARGS`` in its own session and kill it and all its workers with SIGKILL once ``ready()``
    (or once it exits or ``timeout`` passes): a farm killed mid-render, as ``kill -9`` leaves it."""
    run = subprocess.Popen([*FARM, *map(str, args)], env=dict(os.environ, FARM_STATE_DIR=str(state)),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not ready() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"cannot read {path}"
    return image


def max_difference(a: Path, b: Path) -> int:
    """Largest per-channel difference in 8-bit steps; images must have the same shape."""
    x, y = read_image(a).astype(np.int32), read_image(b).astype(np.int32)
    assert x.shape == y.shape, f"{a.name}: {x.shape} vs {y.shape}"
    return int(np.abs(x - y).max())


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"
