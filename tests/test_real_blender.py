"""The extension in a real Blender binary: Debian's own ``blender`` (5.2 LTS, Python 3.14), with its UI, under Xvfb.

The zip is installed exactly as ``build.py extension`` builds it, with Blender's own
``blender -c extension install-file --enable``, into a fresh user folder. Then
Blender starts with its UI on a small Cycles scene, and ``tests/gui_session.py``
drives it as an artist would (menu search, Render to Farm, Cancel Farm Job)
through Blender's event simulation. The test judges what that session saw, and
the frames, against the same binary's plain render.

The Debian system is made by ``python3 build.py test`` (``tests/debian_root.py``);
these tests never skip for want of it.
"""

from __future__ import annotations

import json
import re
import shlex
import struct
import zipfile
from pathlib import Path

import cv2
import debian_root
import numpy as np
import pytest
from conftest import ROOT, max_difference, read_image

from farm_pipelines.host import Host

SUITE = "sid"
SCENE = {"size": [64, 48], "samples": 1024, "frames": [1, 2]}  # slow enough for the bar to move
#: The test scene, built by the binary itself. Adaptive sampling is off: at this sample count it
#: makes tiles differ from a whole frame by 1-2 levels unless tiles have overscan (see README).
BUILD_SCENE = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import bpy, scene_builder; "
               f"scene_builder.build({SCENE!r}); bpy.context.scene.cycles.use_adaptive_sampling = False; "
               "bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1])")
ARTEFACTS = ROOT / "build" / "test-artefacts" / "real-blender"
SITE_PACKAGES = ".config/blender/{series}/extensions/.local/lib/python3.14/site-packages"


def linux_zip() -> Path:
    """The extension zip Blender on Linux takes, as ``build.py extension`` left it in dist/."""
    from test_extension import build_extension

    built = build_extension()
    zips = built if isinstance(built, list | tuple) else [built]
    linux = [path for path in zips if "linux" in path.name] or [path for path in zips if "-" not in path.stem[15:]]
    assert linux, f"no zip for linux-x64 among {zips}"
    return Path(linux[0])


def xwd_to_bgr(data: bytes) -> np.ndarray:
    """A 24-bit TrueColor XWD image (what Xvfb ``-fbdir`` keeps) as a BGR array, for PNG screenshots."""
    header = struct.unpack(">25I", data[:100])
    header_size, width, height, byte_order = header[0], header[4], header[5], header[7]
    bits_per_pixel, bytes_per_line, colors = header[11], header[12], header[19]
    assert bits_per_pixel == 32 and byte_order == 0, "expected 32-bit little-endian pixels"
    start = header_size + 12 * colors
    rows = np.frombuffer(data, np.uint8, height * bytes_per_line, start).reshape(height, bytes_per_line)
    return np.ascontiguousarray(rows[:, :width * 4].reshape(height, width, 4)[:, :, :3])


@pytest.fixture(scope="module")
def root() -> Path:
    return debian_root.ensure(SUITE)


def run_in_root(root: Path, script: str, work: Path, timeout: float, *also: Path):
    """Run a shell script inside the Debian root as a user whose home is ``work/home``.

    The project (read by the scripts) and ``work`` are seen inside at their own paths.
    """
    binds = (work, ROOT, *(path for path in also if not path.is_relative_to(ROOT)))
    (work / "tmp").mkdir(exist_ok=True)
    return debian_root.run(root, ["bash", "-euo", "pipefail", "-c", script], binds=binds, tmp=work / "tmp",
                           env={"HOME": str(work / "home"), "PYTHONDONTWRITEBYTECODE": "1"},
                           timeout=timeout, capture_output=True, text=True)


@pytest.fixture(scope="module")
def gui_run(root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Install the zip, render plainly, then run the GUI session; everything the tests judge."""
    work = tmp_path_factory.mktemp("real-blender")
    archive = linux_zip()
    for name in ("home", "plain", "out-finished", "out-cancelled", "shots"):
        (work / name).mkdir()
    scene = work / "scene.blend"
    q = shlex.quote
    script = f"""
series=$(blender --version | sed -n 's/^Blender \\([0-9]*\\.[0-9]*\\).*/\\1/p')
site="$HOME/{SITE_PACKAGES.replace('{series}', '$series')}"
blender -b -c extension install-file -r user_default --enable {q(str(archive))} > {q(str(work / 'install.log'))} 2>&1
ls -A "$site" | sort > {q(str(work / 'wheels-before.txt'))}
blender -b --factory-startup --python-expr {q(BUILD_SCENE)} -- {q(str(scene))} > /dev/null 2>&1
blender -b {q(str(scene))} -o {q(str(work / 'plain' / '######'))} -a > {q(str(work / 'plain.log'))} 2>&1
ls -A /tmp | grep '^blender_' | sort > {q(str(work / 'tmp-before.txt'))} || true
Xvfb :91 -screen 0 1280x1100x24 -nolisten tcp -fbdir {q(str(work / 'shots'))} > {q(str(work / 'xvfb.log'))} 2>&1 &
for _ in $(seq 100); do [ -S /tmp/.X11-unix/X91 ] && break; sleep 0.1; done
DISPLAY=:91 blender --enable-event-simulate -p 0 0 1280 1100 {q(str(scene))} \
    --python {q(str(ROOT / 'tests' / 'gui_session.py'))} -- {q(str(work / 'report.json'))} \
    {q(str(work / 'out-finished'))} {q(str(work / 'out-cancelled'))} {q(str(work / 'shots'))} \
    > {q(str(work / 'gui.log'))} 2>&1 || echo "gui blender exit code $?" >> {q(str(work / 'gui.log'))}
ls -A "$site" | sort > {q(str(work / 'wheels-after.txt'))}
ls -A /tmp | grep '^blender_' | sort > {q(str(work / 'tmp-after.txt'))} || true
blender --version | head -1 > {q(str(work / 'version.txt'))}
"""
    done = run_in_root(root, script, work, 600, archive.parent)
    logs = {name: (work / name).read_text(errors="replace")[-3000:] for name in
            ("install.log", "gui.log", "plain.log") if (work / name).exists()}
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{logs}"
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    for shot in (work / "shots").glob("*.xwd"):
        cv2.imwrite(str(ARTEFACTS / f"{shot.stem}.png"), xwd_to_bgr(shot.read_bytes()))
    assert (work / "report.json").exists(), f"the GUI session wrote no report: {logs}"
    report = json.loads((work / "report.json").read_text())
    assert report["error"] is None, report["error"] + logs.get("gui.log", "")
    return {"work": work, "report": report, "logs": logs}


def test_blender_accepts_and_enables_the_zip(gui_run: dict) -> None:
    log = gui_run["logs"]["install.log"]
    assert "incompatible" not in log.lower(), log
    assert gui_run["report"]["extension_enabled"], log
    assert gui_run["report"]["blender"].startswith("5.2"), gui_run["report"]["blender"]


def test_the_timer_drives_the_progress_bar(gui_run: dict) -> None:
    samples = gui_run["report"]["jobs"][0]["samples"]
    fractions = [sample["fraction"] for sample in samples]
    assert len(set(fractions)) >= 3, f"the bar hardly moved: {fractions}"
    assert fractions == sorted(fractions), "progress went backwards"
    assert any(0 < fraction < 1 for fraction in fractions)
    assert {sample["tiles_total"] for sample in samples} >= {8}, samples[-1]
    assert (ARTEFACTS / "progress.png").exists() and (ARTEFACTS / "finished.png").exists()
    # Internal bookkeeping of the farm never reaches the panel.
    assert not any("datum" in sample["message"] for sample in samples), {s["message"] for s in samples}


def test_frames_land_in_blender_and_match_the_binarys_plain_render(gui_run: dict) -> None:
    work, job = gui_run["work"], gui_run["report"]["jobs"][0]
    assert job["state"] == "FINISHED", job["message"]
    frames = sorted((work / "out-finished").iterdir())
    assert [frame.name for frame in frames] == ["000001.png", "000002.png"]
    for frame in frames:
        assert max_difference(frame, work / "plain" / frame.name) == 0, frame.name
    loaded = set(job["images"].values())
    assert {str(frame) for frame in frames} <= loaded, job["images"]
    assert [item[0] for item in job["frames"]] == [1, 2]
    assert job["shown"] in job["images"] and job["images"][job["shown"]] == str(frames[-1])
    assert job["shown_size"] == SCENE["size"]
    assert job["children_after"] == [], "workers outlived the job"


def test_cancel_stops_every_worker_and_leaves_no_partial_frame(gui_run: dict) -> None:
    work, job = gui_run["work"], gui_run["report"]["jobs"][1]
    assert job["state"] == "CANCELLED", job["message"]
    assert job.get("cancelled_at_tiles", 0) >= 1
    assert job["samples"][-1]["tiles_done"] < job["samples"][-1]["tiles_total"], "cancelled too late to count"
    assert job["children_after"] == [], f"processes left after Cancel: {job['children_after']}"
    for left in (work / "out-cancelled").iterdir():  # only whole frames, if any finished before the cancel
        assert re.fullmatch(r"\d{6}\.png", left.name), f"partial file left: {left.name}"
        assert read_image(left).shape[:2] == (SCENE["size"][1], SCENE["size"][0])


def test_the_extensions_wheels_survive_the_jobs(gui_run: dict) -> None:
    work = gui_run["work"]
    before = (work / "wheels-before.txt").read_text().split()
    assert any(name.startswith("grpc") for name in before), before
    after = (work / "wheels-after.txt").read_text().split()
    assert set(before) <= set(after), f"removed by the jobs: {set(before) - set(after)}"
    assert set(after) - set(before) <= {"__pycache__"}  # Python compiling a wheel's top-level module


def test_workers_leave_no_temp_folders(gui_run: dict) -> None:
    work = gui_run["work"]
    assert (work / "tmp-after.txt").read_text().split() == (work / "tmp-before.txt").read_text().split()


def _tiny_extension(folder: Path) -> Path:
    """An extension whose one wheel (made here) Blender installs into the user's extensions site-packages."""
    wheel = folder / "farmprobe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        files = {"farmprobe/__init__.py": "",
                 "farmprobe-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: farmprobe\nVersion: 1.0\n",
                 "farmprobe-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
        for name, text in files.items():
            archive.writestr(name, text)
        # Blender removes a wheel's files by its RECORD, as pip does.
        archive.writestr("farmprobe-1.0.dist-info/RECORD", "".join(f"{name},,\n" for name in files)
                         + "farmprobe-1.0.dist-info/RECORD,,\n")
    extension = folder / "farmprobe.zip"
    with zipfile.ZipFile(extension, "w") as archive:
        archive.writestr("blender_manifest.toml", 'schema_version = "1.0.0"\nid = "farmprobe"\nversion = "1.0.0"\n'
                         'name = "Farm Probe"\ntagline = "Has a wheel"\nmaintainer = "tests"\ntype = "add-on"\n'
                         'blender_version_min = "4.2.0"\nlicense = ["SPDX:GPL-3.0-or-later"]\n'
                         f'wheels = ["./wheels/{wheel.name}"]\n')
        archive.writestr("__init__.py", "def register():\n    pass\n\n\ndef unregister():\n    pass\n")
        archive.write(wheel, f"wheels/{wheel.name}")
    return extension


def test_a_farm_process_cannot_delete_the_users_wheels(root: Path, tmp_path: Path) -> None:
    """What syncs wheels: ``wm.read_factory_settings`` in a process with no extension enabled
    (``addon_utils._initialize_extensions_compat_data``) removes every wheel from the shared
    extensions folder. The same call in a process with the farm's scratch environment
    (``Host.scratch``) leaves the user's wheels alone."""
    extension = _tiny_extension(tmp_path)
    (tmp_path / "home").mkdir()
    reset = "blender -b --factory-startup --python-expr 'import bpy; bpy.ops.wm.read_factory_settings()'"
    with Host.scratch() as scratch:
        farm_env = " ".join(f"{key}={shlex.quote(value)}" for key, value in scratch.items())
        script = f"""
site=$(echo $HOME/.config/blender/*/extensions/.local/lib/python3.*/site-packages)
count() {{ ls -A $(echo $HOME/.config/blender/*/extensions/.local/lib/python3.*/site-packages) | wc -l; }}
blender -b -c extension install-file -r user_default --enable {shlex.quote(str(extension))} > /dev/null 2>&1
echo installed $(count)
env {farm_env} {reset} > /dev/null 2>&1
echo farm $(count)
{reset} > /dev/null 2>&1
echo shared $(count)
"""
        done = run_in_root(root, script, tmp_path, 120, Path(scratch["TMPDIR"]).parent)
    counts = dict(line.split() for line in done.stdout.splitlines())
    assert done.returncode == 0, done.stderr
    assert int(counts["installed"]) >= 2, done.stdout  # the package and its dist-info
    assert counts["farm"] == counts["installed"], "a farm process deleted the user's wheels"
    assert counts["shared"] == "0", "the hazard this guards against is gone; revisit Host.scratch"
