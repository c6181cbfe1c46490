#!/usr/bin/env python3
"""Project entry point; needs nothing but Python 3.11.

    python3 build.py demo       set up .venv, make the demo scene, render it on the local farm
    python3 build.py test       set up .venv, run the whole test suite
    python3 build.py extension  build dist/pachyderm_farm-<version>.zip (the Blender add-on)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".requirements.sha256"


def ensure_venv() -> None:
    """Create .venv and install the pinned requirements, skipping work already done."""
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"error: Python 3.11 is required (bpy 5.0 is built for it), this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = _requirements_digest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    print("installing pinned dependencies into .venv (bpy is about 800 MB) ...", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-r", "requirements.txt", "-r", "requirements-dev.txt"], cwd=ROOT, check=True)
    subprocess.run([*pip, "--no-deps", "-e", "."], cwd=ROOT, check=True)
    STAMP.write_text(wanted)


def _requirements_digest() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "requirements-dev.txt", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def run(*args: str) -> int:
    return subprocess.run([str(PYTHON), *args], cwd=ROOT).returncode


def demo() -> int:
    out = ROOT / "demo_output"
    scene = out / "demo_scene.blend"
    if run("-m", "farm_pipelines.blender.demo_scene", str(scene)) != 0:
        return 1
    code = subprocess.run([str(VENV / "bin" / "farm"), "render", str(scene), "--tile", "32",
                           "--out", str(out / "frames")], cwd=ROOT).returncode
    if code == 0:
        print(f"demo frames are in {out / 'frames'}")
    return code


def test() -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([str(PYTHON), "-m", "pytest", "-q", *sys.argv[2:]], cwd=ROOT, env=env).returncode


def extension() -> int:
    """Build the Blender extension zip (owned by the add-on work; see addon/)."""
    raise SystemExit("error: the extension build is not written yet")


COMMANDS = {"demo": demo, "test": test, "extension": extension}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    ensure_venv()
    sys.exit(COMMANDS[sys.argv[1]]())


if __name__ == "__main__":
    main()
