"""The extension zip: built by ``build.py extension``, accepted by Blender's own validator, complete."""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import bpy
import pytest

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS = ["linux-x64", "macos-arm64", "macos-x64", "windows-x64"]


@functools.cache
def build_extension() -> Path:
    """Run build.py's ``extension`` once per session, in this process (wheel downloads are cached in build/)."""
    spec = importlib.util.spec_from_file_location("build", ROOT / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.extension() == 0
    version = tomllib.loads((ROOT / "blender_manifest.toml").read_text())["version"]
    return ROOT / "dist" / f"pachyderm_farm-{version}.zip"


@pytest.fixture(scope="module")
def archive() -> Path:
    return build_extension()


def _validator() -> Path:
    return Path(bpy.utils.system_resource("SCRIPTS"), "addons_core", "bl_pkg", "cli", "blender_ext.py")


def _load_blender_ext():
    """Blender's extension tool as a module, for its wheel-to-platform rules."""
    spec = importlib.util.spec_from_file_location("blender_ext", _validator())
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_blender_validator_accepts_the_zip(archive: Path) -> None:
    done = subprocess.run([sys.executable, str(_validator()), "validate", str(archive)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout


def test_manifest_matches_the_project(archive: Path) -> None:
    with zipfile.ZipFile(archive) as bundle:
        manifest = tomllib.loads(bundle.read("blender_manifest.toml").decode())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert manifest["id"] == "pachyderm_farm"
    assert manifest["name"] == "Pachyderm Render Farm"
    assert manifest["type"] == "add-on"
    assert manifest["blender_version_min"] == "4.2.0"
    assert manifest["license"] == [f"SPDX:{project['license']}"]
    assert set(manifest["permissions"]) == {"network", "files"}
    assert manifest["platforms"] == PLATFORMS


def test_zip_holds_addon_farm_code_and_wheels_for_every_platform(archive: Path) -> None:
    with zipfile.ZipFile(archive) as bundle:
        names = set(bundle.namelist())
        manifest = tomllib.loads(bundle.read("blender_manifest.toml").decode())
    addon = {path.relative_to(ROOT / "addon").as_posix() for path in (ROOT / "addon").glob("*.py")}
    assert "__init__.py" in addon and addon <= names
    farm = {path.relative_to(ROOT).as_posix() for path in (ROOT / "farm_pipelines").rglob("*")
            if path.suffix in (".py", ".json") and "__pycache__" not in path.parts}
    assert farm <= names
    wheels = [name.removeprefix("./") for name in manifest["wheels"]]
    assert set(wheels) == {name for name in names if name.startswith("wheels/")}
    packages = {Path(wheel).name.split("-")[0].lower() for wheel in wheels}
    assert {"python_pachyderm", "grpcio", "protobuf", "opencv_python_headless"} <= packages
    assert not packages & {"numpy", "bpy"}, "Blender bundles these"
    blender_ext = _load_blender_ext()
    for package in ("grpcio", "opencv_python_headless"):
        builds = [wheel for wheel in wheels if Path(wheel).name.lower().startswith(package + "-")]
        for platform in PLATFORMS:
            assert any(blender_ext.blender_platform_compatible_with_wheel_platform_from_filepath(platform, wheel)
                       for wheel in builds), f"{package}: no wheel Blender installs on {platform} in {builds}"
    assert all("-cp311-" in wheel or "-abi3-" in wheel or "-none-any" in wheel for wheel in wheels)
