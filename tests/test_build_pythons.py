"""build.py on each Python: PyPI has bpy (Blender as a module) for Python 3.11 and 3.13 only.

Python 3.13 is tested where it is the system's ``python3``, in Debian trixie: a copy
of this checkout (what a clone of it holds, uncommitted changes included) runs
``python3 build.py setup``, which must make ``.venv`` with bpy 5.2.2; that venv's
``farm`` renders a tiny scene as tiles, and the frames must equal the same bpy's
plain render pixel for pixel. The same bpy installs the Linux extension zip, as
Blender 5.2 on Python 3.13 does, and must pick the zip's cp313 wheels.

The copy lives in build/python313/ and keeps its ``.venv`` between runs: pip's own
cache cannot help where the package index's responses carry no cache headers,
and a venv with bpy is 1 GB of files to unpack. A fresh clone (CI) makes it anew.

On Debian sid, whose ``python3`` is 3.14 and which has no other Python, build.py
must say in one line what to install; given a Python it has no pins for and a
``python3.11`` on PATH, it must run itself with that one.
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

import debian_root
import pytest
from conftest import ROOT, max_difference
from test_extension import build_extension

CHECKOUT = ROOT / "build" / "python313" / "checkout"
SCENE = {"size": [48, 32], "samples": 2, "frames": [1, 2]}
PLAIN_RENDER = (
    "import bpy, sys\n"
    "bpy.ops.wm.open_mainfile(filepath=sys.argv[1], load_ui=False, use_scripts=False)\n"
    "scene = bpy.context.scene\n"
    "for frame in range(scene.frame_start, scene.frame_end + 1):\n"
    "    scene.frame_set(frame)\n"
    "    scene.render.filepath = f'{sys.argv[2]}/{frame:06d}'\n"
    "    bpy.ops.render.render(write_still=True)\n"
)
#: Installs the zip (argv[1]) as Blender's Install from Disk does, into a repository under argv[2].
INSTALL_ZIP = (
    "import json, os, sys, bpy\n"
    "repo = bpy.context.preferences.extensions.repos.new(name='Farm Test', module='farm_test',\n"
    "    custom_directory=os.path.join(sys.argv[2], 'repo'), source='USER')\n"
    "result = bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo='farm_test',\n"
    "    enable_on_install=True)\n"
    "site = bpy.utils.user_resource('EXTENSIONS', path=os.path.join('.local', 'lib',\n"
    "    'python{}.{}'.format(*sys.version_info[:2]), 'site-packages'))\n"
    "files = sorted(os.path.relpath(os.path.join(top, name), site) for top, _, names in os.walk(site)\n"
    "    for name in names if name.endswith('.so'))\n"
    "print(json.dumps({'result': sorted(result), 'enabled': 'bl_ext.farm_test.pachyderm_farm' in\n"
    "    bpy.context.preferences.addons, 'python': list(sys.version_info[:2]), 'compiled': files}))\n"
)


def sync_checkout() -> None:
    """Make CHECKOUT hold exactly what a clone of this checkout would, keeping its .venv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout
    CHECKOUT.mkdir(parents=True, exist_ok=True)
    for entry in CHECKOUT.iterdir():
        if entry.name != ".venv":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for name in filter(None, listed.split(b"\0")):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            target = CHECKOUT / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _trust() -> tuple[tuple[Path, ...], dict[str, str]]:
    """The host's certificate bundle for pip inside the root: the same trust as the host's own pip."""
    bundle = os.environ.get("PIP_CERT") or ssl.get_default_verify_paths().cafile
    if not bundle or not Path(bundle).is_file():
        return (), {}
    return (Path(bundle).parent,), {"PIP_CERT": bundle}


def in_root(suite: str, script: str, work: Path, timeout: float, *binds: Path) -> subprocess.CompletedProcess:
    certificates, env = _trust()
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    return debian_root.run(debian_root.ensure(suite), ["bash", "-euo", "pipefail", "-c", script],
                           binds=(work, *binds, *certificates), tmp=work / "tmp", timeout=timeout,
                           env={**env, "PYTHONDONTWRITEBYTECODE": "1", "FARM_STATE_DIR": str(work / "state")},
                           capture_output=True, text=True)


@pytest.fixture(scope="module")
def python313(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``python3 build.py setup`` in trixie; the venv it made, and how long it took."""
    work = tmp_path_factory.mktemp("python313")
    sync_checkout()
    started = time.monotonic()
    done = in_root("trixie", f"cd {shlex.quote(str(CHECKOUT))} && python3 --version && python3 build.py setup && "
                   ".venv/bin/python -c 'import sys, bpy; print(*sys.version_info[:2], bpy.app.version_string)'",
                   work, 1800, CHECKOUT)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    print(f"\ntrixie: python3 build.py setup and the bpy check took {seconds:.0f} s")
    return {"work": work, "python": lines[0], "venv": lines[-1].split(maxsplit=2)}


def test_build_py_on_python313_sets_up_bpy_52(python313: dict) -> None:
    assert python313["python"].startswith("Python 3.13."), python313["python"]
    major, minor, blender = python313["venv"]
    assert (major, minor) == ("3", "13")
    assert blender.startswith("5.2.2"), blender


def test_farm_on_python313_renders_tiles_identical_to_a_plain_render(python313: dict) -> None:
    work = python313["work"]
    q = shlex.quote
    scene, farm, plain = work / "scene.blend", work / "farm", work / "plain"
    done = in_root("trixie", f"""cd {q(str(CHECKOUT))}
.venv/bin/python tests/scene_builder.py {q(str(scene))} {q(json.dumps(SCENE))}
.venv/bin/farm render {q(str(scene))} --tile 16 --workers 2 --out {q(str(farm))}
.venv/bin/python -c {q(PLAIN_RENDER)} {q(str(scene))} {q(str(plain))} > /dev/null
""", work, 600, CHECKOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    frames = sorted(path.name for path in farm.iterdir())
    assert frames == ["000001.png", "000002.png"]
    for name in frames:
        assert max_difference(farm / name, plain / name) == 0, name


def test_bpy_52_on_python313_installs_the_linux_zip_with_its_cp313_wheels(python313: dict) -> None:
    work, archive = python313["work"], build_extension()
    extensions = work / "extensions"
    done = in_root("trixie", f"BLENDER_USER_EXTENSIONS={shlex.quote(str(extensions))} "
                   f"{shlex.quote(str(CHECKOUT / '.venv' / 'bin' / 'python'))} -c {shlex.quote(INSTALL_ZIP)} "
                   f"{shlex.quote(str(archive))} {shlex.quote(str(work))}", work, 300, CHECKOUT, archive.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["result"] == ["FINISHED"] and seen["enabled"], done.stdout[-3000:]
    assert seen["python"] == [3, 13]
    compiled = seen["compiled"]
    assert any(name.startswith("grpc/") and name.endswith(".cpython-313-x86_64-linux-gnu.so") for name in compiled)
    assert "OpenEXR.cpython-313-x86_64-linux-gnu.so" in compiled, compiled
    assert not [name for name in compiled if "cpython-311" in name or "cpython-314" in name], compiled


def test_a_python_without_bpy_and_no_other_is_told_what_to_install_in_one_line(tmp_path: Path) -> None:
    shutil.copy2(ROOT / "build.py", tmp_path / "build.py")
    done = in_root("sid", f"python3 --version && python3 {shlex.quote(str(tmp_path / 'build.py'))} setup", tmp_path,
                   120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith("Python 3.14"), done.stdout  # python3 --version, then nothing from build.py
    assert done.stdout.count("\n") == 1, done.stdout
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: build.py needs Python 3.13 or 3.11") and "install python3.13" in done.stderr
    assert not (tmp_path / ".venv").exists()


def _python_without_bpy(build) -> tuple[str, tuple[int, int]] | None:
    """A Python build.py has no pins for (pyenv's 3.12 on the project's machines), if there is one."""
    candidates = [shutil.which(f"python3.{minor}") for minor in (12, 14, 10)]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3.*[0-9]")))
    for python in filter(None, candidates):
        version = build._version_of(python)
        if version and version not in build.REQUIREMENTS and version >= (3, 8):
            return python, version
    return None


def test_build_py_runs_itself_with_a_python_bpy_is_built_for(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build", ROOT / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    found = _python_without_bpy(build)
    if found is None:
        pytest.skip("no Python other than 3.11 and 3.13 on this machine to start build.py with")
    other, version = found
    path = tmp_path / "bin"
    path.mkdir()
    (path / "python3.11").symlink_to(sys.executable)
    # No command: the Python it ends up on prints the usage (a 3.12 would say it needs 3.13 or 3.11 instead).
    done = subprocess.run([other, str(ROOT / "build.py")], env={"PATH": str(path), "HOME": str(tmp_path)},
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.splitlines() == [f"Python {version[0]}.{version[1]} has no bpy: running build.py with "
                                        f"{path / 'python3.11'}"]
    assert "python3 build.py setup" in done.stderr and "error:" not in done.stderr, done.stderr
