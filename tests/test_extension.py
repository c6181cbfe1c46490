"""The extension zips: built by ``build.py extension``, one per platform, accepted by Blender's own validator, complete.

Blender decides which Pythons a zip supports from the tags of the wheels its manifest
lists, and installs, per package, the wheel that matches its platform and Python.
These tests read the zips with Blender's own extension tool (``blender_ext.py`` from the
bpy wheel) for those rules. The real binaries run them in test_extension_in_blender.py
(Debian's blender 5.2.2, Python 3.14) and test_build_pythons.py (bpy 5.2.2, Python 3.13).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import bpy
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS = ["linux-x64", "macos-arm64", "macos-x64", "windows-x64"]
#: What each zip must claim: 3.11 (Blender 4.5 LTS, 5.0), 3.13 (5.1, 5.2 LTS, 5.3), and 3.14 on Linux,
#: where distributions build Blender with it.
PYTHONS = {platform: {(3, 11), (3, 13)} for platform in PLATFORMS} | {"linux-x64": {(3, 11), (3, 13), (3, 14)}}
#: Packages with compiled code built per Python (OpenCV's wheel uses the stable ABI and serves every Python).
PER_PYTHON = ("grpcio", "openexr", "zstandard")


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def build_extensions() -> dict[str, Path]:
    """Run build.py's ``extension`` once per session, in this process (wheel downloads are cached in build/)."""
    build = _load("build", ROOT / "build.py")
    assert build.extension() == 0
    fields = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    return {platform: build.extension_zip(fields["id"], fields["version"], platform) for platform in PLATFORMS}


def build_extension() -> Path:
    """The zip for this machine (Linux x64), which the add-on tests install into bpy."""
    return build_extensions()["linux-x64"]


@pytest.fixture(scope="module")
def archives() -> dict[str, Path]:
    return build_extensions()


def _validator() -> Path:
    return Path(bpy.utils.system_resource("SCRIPTS"), "addons_core", "bl_pkg", "cli", "blender_ext.py")


@functools.cache
def blender_ext():
    """Blender's extension tool as a module, for its wheel rules."""
    return _load("blender_ext", _validator())


def manifest_of(archive: Path) -> dict:
    with zipfile.ZipFile(archive) as bundle:
        return tomllib.loads(bundle.read("blender_manifest.toml").decode())


def installs_on(wheel: str, platform: str, python: tuple[int, int]) -> bool:
    """Whether Blender on ``platform`` with ``python`` installs this wheel (its rules in bl_extension_ops).

    The platform must match; the Python tag must name this Python (or its major version),
    or be older than it with a stable-ABI (``abi3``) tag.
    """
    tool = blender_ext()
    if not tool.blender_platform_compatible_with_wheel_platform_from_filepath(platform, wheel):
        return False
    python_tag, abi_tag = Path(wheel).stem.split("-")[-3:-1]
    stable = tool.python_versions_from_wheel_abi_tag(abi_tag, stable_only=True)
    return any(version == python or version == python[:1] or ((python[0],) in stable and python >= version)
               for version in tool.python_versions_from_wheel_python_tag(python_tag))


def test_one_zip_per_platform_named_as_blender_names_split_zips(archives: dict[str, Path]) -> None:
    fields = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    built = sorted(path.name for path in (ROOT / "dist").glob(f"{fields['id']}-*.zip"))
    assert built == sorted(f"pachyderm_farm-{fields['version']}-{platform.replace('-', '_')}.zip"
                           for platform in PLATFORMS)
    for archive in archives.values():
        assert archive.stat().st_size < 150e6, f"{archive.name}: {archive.stat().st_size / 1e6:.0f} MB"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_blender_validator_accepts_the_zip(archives: dict[str, Path], platform: str) -> None:
    done = subprocess.run([sys.executable, str(_validator()), "validate", str(archives[platform])],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout


@pytest.mark.parametrize("platform", PLATFORMS)
def test_manifest_matches_the_project(archives: dict[str, Path], platform: str) -> None:
    manifest = manifest_of(archives[platform])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert manifest["id"] == "pachyderm_farm"
    assert manifest["name"] == "Pachyderm Render Farm"
    assert manifest["type"] == "add-on"
    assert manifest["version"] == project["version"]
    assert manifest["blender_version_min"] == "4.5.0"
    assert manifest["license"] == [f"SPDX:{project['license']}"]
    assert set(manifest["permissions"]) == {"network", "files"}
    assert manifest["platforms"] == [platform]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_zip_holds_the_addon_at_the_top_and_only_the_farm_code_in_its_folder(archives: dict[str, Path],
                                                                              platform: str) -> None:
    build = _load("build", ROOT / "build.py")
    with zipfile.ZipFile(archives[platform]) as bundle:
        names = set(bundle.namelist())
    addon = {path.relative_to(ROOT / "addon").as_posix() for path in (ROOT / "addon").glob("*.py")}
    assert "__init__.py" in addon and addon <= names
    farm = {f"{build.FARM_FOLDER}/{path.relative_to(ROOT).as_posix()}" for path in (ROOT / "farm_pipelines").rglob("*")
            if path.suffix in (".py", ".json") and "__pycache__" not in path.parts}
    in_farm_folder = {name for name in names if name.startswith(f"{build.FARM_FOLDER}/")}
    assert in_farm_folder == farm, "the farm folder holds farm_pipelines/ and nothing else"
    assert names == {"blender_manifest.toml"} | addon | farm | {name for name in names if name.startswith("wheels/")}
    wheels = {name.removeprefix("./") for name in manifest_of(archives[platform])["wheels"]}
    assert wheels == {name for name in names if name.startswith("wheels/")}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_claimed_python_gets_exactly_one_wheel_of_every_package(archives: dict[str, Path],
                                                                     platform: str) -> None:
    wheels = manifest_of(archives[platform])["wheels"]
    assert blender_ext().python_versions_from_wheels(wheels) == PYTHONS[platform]
    packages = {Path(wheel).name.split("-")[0].lower() for wheel in wheels}
    assert set(PER_PYTHON) | {"python_pachyderm", "protobuf", "opencv_python_headless",
                              "blender_asset_tracer"} <= packages
    assert not packages & {"numpy", "bpy", "requests"}, "Blender bundles these"
    for python in sorted(PYTHONS[platform]):
        for package in sorted(packages):
            chosen = [Path(wheel).name for wheel in wheels
                      if Path(wheel).name.lower().startswith(package + "-") and installs_on(wheel, platform, python)]
            assert len(chosen) == 1, f"{platform}, Python {python}: {package} would install {chosen}"
            if package in PER_PYTHON:
                assert f"-cp{python[0]}{python[1]}-" in chosen[0]
    for wheel in wheels:  # nothing shipped that no claimed Python installs
        assert any(installs_on(wheel, platform, python) for python in PYTHONS[platform]), wheel


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        if match := re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip()):
            pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return pins


def test_shipped_wheels_are_the_tested_versions_and_all_they_need() -> None:
    """The pins in requirements-extension.txt are what this venv tests, agree with both venvs' pins,
    and hold everything those packages require, except what Blender bundles."""
    shipped = _pins("requirements-extension.txt")
    for name, version in shipped.items():
        assert importlib.metadata.version(name) == version, name
    for requirements in ("requirements.txt", "requirements-py313.txt"):
        pins = _pins(requirements)
        assert {name: pins[name] for name in shipped.keys() & pins.keys()} == \
               {name: shipped[name] for name in shipped.keys() & pins.keys()}, requirements
    for name in shipped:
        for requirement in map(Requirement, importlib.metadata.requires(name) or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                needed = re.sub(r"[-_.]+", "-", requirement.name).lower()
                assert needed in shipped or needed in ("numpy", "requests"), \
                    f"{name} needs {needed}, which no zip ships and Blender does not bundle"
