"""The farm on Blender 4.5 LTS, the oldest Blender it supports, as well as on the suite's own 5.0.

bpy 4.5 (Blender as a module, from PyPI) goes into a venv of its own under build/,
made from requirements-bpy45.txt on first use (about two minutes and 1 GB) and
made again when that file changes. The farm's core tests then run in a second
pytest on that venv's Python, so every Blender process in them is Blender 4.5:
the scenes they build, the whole-frame references, prepare, splitter, renderers,
merger and the add-on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_scene

from farm_pipelines.blender_versions import header_version

VENV = ROOT / "build" / "venv-bpy45"
REQUIREMENTS = ROOT / "requirements-bpy45.txt"
#: The core tests run again on 4.5: tiled frames against a whole-frame render, compositing and denoising
#: once per frame, held animation, and the add-on in bpy. Each id selects exactly one test.
CORE = [
    "tests/test_identity.py::test_tiled_frames_match_a_whole_frame_render[odd-size]",
    "tests/test_identity.py::test_tiled_frames_match_a_whole_frame_render[border-crop]",
    "tests/test_compositing.py::test_farm_composites_once_without_seams[glare-blur-denoise-overscan]",
    "tests/test_animation_hold.py::test_only_plain_actions_are_held_and_the_frame_keeps_its_values",
    "tests/test_animation_hold.py::test_held_frames_match_a_whole_frame_render",
    "tests/test_addon.py::test_render_with_wait_loads_frames_and_leaves_the_session_alone",
    "tests/test_addon.py::test_timer_callback_drives_a_submitted_job",
]


@pytest.fixture(scope="session")
def python45() -> Path:
    """The 4.5 venv's Python, installed from the pinned requirements unless already done."""
    python = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    stamp = VENV / ".requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        if not python.exists():
            base = sys.executable if sys.version_info[:2] == (3, 11) else shutil.which("python3.11")
            if base is None:  # bpy 4.5 is built for Python 3.11 only
                pytest.skip("Blender 4.5 needs Python 3.11: install python3.11 to test the oldest supported Blender")
            subprocess.run([base, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                        "-r", str(REQUIREMENTS)], check=True)
        stamp.write_text(wanted)
    version = subprocess.run([str(python), "-c", "import bpy; print('bpy', *bpy.app.version)"],
                             capture_output=True, text=True, timeout=120).stdout.split()
    assert version[-3:-1] == ["4", "5"], version
    return python


def _on_45(python45: Path, *args: str, state: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if state is not None:
        env["FARM_STATE_DIR"] = str(state)
    return subprocess.run([str(python45), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_core_tests_pass_on_blender_45(python45, tmp_path):
    done = _on_45(python45, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'inner'}",
                  *CORE, timeout=1800)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    # All of them ran and passed: none skipped, deselected or missing.
    assert re.fullmatch(rf"=*\s*{len(CORE)} passed(, \d+ warnings?)? in .*", summary), summary


def test_prepare_exits_by_itself_on_blender_45(python45, tmp_path):
    """bpy 4.5 once hung for good at exit after writing the result (issue 12); it must exit on its own."""
    blend = tmp_path / "scene.blend"
    built = _on_45(python45, str(ROOT / "tests" / "scene_builder.py"), str(blend), json.dumps({"frames": [1, 1]}))
    assert built.returncode == 0, built.stderr
    result = tmp_path / "prepare.json"
    done = _on_45(python45, "-m", "farm_pipelines.blender.prepare", str(blend), str(tmp_path / "copy.blend"),
                  "{}", str(result), timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(result.read_text())["saved_with"][:2] == [4, 5]
    assert header_version(tmp_path / "copy.blend") == (4, 5)  # the header layout before 5.0: BLENDER-v405
    assert "Not freed memory blocks" not in done.stdout + done.stderr


def test_scene_saved_by_a_newer_blender_is_refused_before_anything_runs(python45, tmp_path):
    """A scene saved by this suite's bpy 5.0, rendered on a farm whose Blender (the host's) is 4.5."""
    blend = make_scene(tmp_path / "from_5_0.blend", frames=[1, 1])
    state, out = tmp_path / "state", tmp_path / "out"
    done = _on_45(python45, "-m", "farm_pipelines.cli", "render", str(blend), "--out", str(out), state=state)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.search(r"from_5_0\.blend: saved by Blender 5\.0, newer than Blender 4\.5\.\d+ .*; render it from "
                     r"Blender 5\.0 or newer", lines[0]), lines[0]
    assert not out.exists()
    assert not (state / "repos" / "blends").exists() and not (state / "datums" / "renderer").exists()
