"""The extension zips in a real Blender binary: Debian's blender 5.2 LTS, whose Python is 3.14.

Its own validator checks every platform's zip; the Linux zip is installed with
``blender -c extension install-file --enable`` into a fresh home, and a second
Blender finds it enabled, with its wheels (cp314 builds) and the farm code
importable through it, and the add-on's own modules private. Seconds, no UI
(test_real_blender.py drives the UI). The Debian system comes from
``tests/debian_root.py``; these tests never skip for want of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import debian_root
import pytest
from test_extension import PLATFORMS, build_extensions

SUITE = "sid"
MODULE = "bl_ext.user_default.pachyderm_farm"
#: Run by the second Blender: what it sees of the installed extension, as JSON on the last line.
CHECK = f"""
import importlib, json, sys
import bpy
import grpc, cv2, OpenEXR, python_pachyderm, farm_pipelines
from farm_pipelines import pachyderm
try:
    import jobs
    leaked = jobs.__file__
except ImportError:
    leaked = None
extension = importlib.import_module({MODULE!r})
print(json.dumps({{
    "enabled": {MODULE!r} in bpy.context.preferences.addons,
    "python": list(sys.version_info[:2]),
    "blender": bpy.app.version_string,
    "extension": extension.__file__,
    "modules": {{name: getattr(module, "__file__", "") for name, module in
                (("grpc", grpc), ("cv2", cv2), ("OpenEXR", OpenEXR), ("python_pachyderm", python_pachyderm),
                 ("farm_pipelines", farm_pipelines))}},
    "leaked_jobs": leaked,
}}))
"""


@pytest.fixture(scope="module")
def root() -> Path:
    return debian_root.ensure(SUITE)


def blender(root: Path, args: list[str], home: Path, *binds: Path):
    return debian_root.run(root, ["blender", *args], binds=(home, *binds), env={"HOME": str(home)}, timeout=300,
                           capture_output=True, text=True)


def test_blenders_own_validator_accepts_every_zip(root: Path) -> None:
    archives = build_extensions()
    checks = " && ".join(f'blender -c extension validate "{archives[platform]}"' for platform in PLATFORMS)
    done = debian_root.run(root, ["sh", "-c", checks], binds=(archives["linux-x64"].parent,), timeout=300,
                           capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("Success parsing TOML") == len(PLATFORMS), done.stdout


def test_linux_zip_installs_enabled_and_its_wheels_import_through_it(root: Path, tmp_path: Path) -> None:
    archive = build_extensions()["linux-x64"]
    home = tmp_path / "home"
    home.mkdir()
    installed = blender(root, ["-b", "-c", "extension", "install-file", "-r", "user_default", "--enable",
                               str(archive)], home, archive.parent)
    log = installed.stdout + installed.stderr
    assert installed.returncode == 0, log
    assert "incompatible" not in log.lower() and 'Installed "pachyderm_farm"' in log, log

    checked = blender(root, ["-b", "--python-exit-code", "1", "--python-expr", CHECK], home)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    seen = json.loads(next(line for line in reversed(checked.stdout.splitlines()) if line.startswith("{")))
    assert seen["enabled"] and seen["blender"].startswith("5.2"), seen
    assert seen["python"] == [3, 14]
    series = ".".join(seen["blender"].split(".")[:2])
    extensions = home / ".config" / "blender" / series / "extensions"
    site = extensions / ".local" / "lib" / "python3.14" / "site-packages"
    extension = extensions / "user_default" / "pachyderm_farm"
    assert Path(seen["extension"]) == extension / "__init__.py"
    for name, where in seen["modules"].items():
        folder = extension / "farm" if name == "farm_pipelines" else site
        assert Path(where).is_relative_to(folder), f"{name} imported from {where}, not from {folder}"
    assert seen["modules"]["OpenEXR"].endswith(".cpython-314-x86_64-linux-gnu.so")
    assert sorted(path.name for path in (extension / "farm").iterdir()) == ["farm_pipelines"]
    assert seen["leaked_jobs"] is None, "the add-on's own modules must not be top-level modules"
