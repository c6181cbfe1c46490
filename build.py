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
    """Build dist/pachyderm_farm-<version>.zip: manifest and add-on at the top, farm code, wheels."""
    import tomllib

    manifest = (ROOT / "blender_manifest.toml").read_text(encoding="utf-8")
    version = tomllib.loads(manifest)["version"]
    # Pure-Python wheels are the same file for every platform: ship each once.
    wheels = {wheel.name: wheel for platform in EXTENSION_PLATFORMS for wheel in _platform_wheels(platform)}
    archive = ROOT / "dist" / f"pachyderm_farm-{version}.zip"
    archive.parent.mkdir(exist_ok=True)
    partial = archive.with_suffix(".zip.partial")
    try:
        _write_extension(partial, manifest, wheels)
        os.replace(partial, archive)
    finally:
        partial.unlink(missing_ok=True)
    print(f"{archive.relative_to(ROOT)}: {archive.stat().st_size / 1e6:.1f} MB, {len(wheels)} wheels")
    return 0


def _write_extension(path: Path, manifest: str, wheels: dict[str, Path]) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("blender_manifest.toml", _manifest_for_zip(manifest, sorted(wheels)))
        for source in _python_files(ROOT / "addon"):
            bundle.write(source, source.relative_to(ROOT / "addon").as_posix())
        for source in _python_files(ROOT / "farm_pipelines"):
            bundle.write(source, source.relative_to(ROOT).as_posix())
        for name, wheel in sorted(wheels.items()):
            # Wheels are zips already; storing them saves minutes of pointless recompression.
            bundle.write(wheel, f"wheels/{name}", compress_type=zipfile.ZIP_STORED)


#: Blender platform -> pip ``--platform`` tags whose wheels run there (pip does not widen manylinux).
EXTENSION_PLATFORMS = {
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "macos-arm64": ["macosx_13_0_arm64"],
    "macos-x64": ["macosx_13_0_x86_64"],
    "windows-x64": ["win_amd64"],
}
#: What the add-on imports that Blender does not bundle; their dependencies come along.
EXTENSION_REQUIREMENTS = ["python-pachyderm", "opencv-python-headless", "OpenEXR"]
#: Bundled with Blender (or Blender itself): never shipped, whatever pip resolves.
BUNDLED_WITH_BLENDER = {"bpy", "numpy"}


def _platform_wheels(platform: str) -> list[Path]:
    """Wheels for one platform, at the versions the tests use, downloaded once into build/wheels/."""
    folder = ROOT / "build" / "wheels" / platform
    constraints = subprocess.run([str(PYTHON), "-m", "pip", "freeze", "--exclude-editable"], cwd=ROOT,
                                 check=True, capture_output=True, text=True).stdout
    argv = ["download", "--disable-pip-version-check", "-q", "--only-binary=:all:", "--python-version", "3.11",
            "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none",
            *(arg for tag in EXTENSION_PLATFORMS[platform] for arg in ("--platform", tag)),
            *EXTENSION_REQUIREMENTS, "-c", "constraints.txt", "-d", "."]
    key = hashlib.sha256(repr((argv, constraints)).encode()).hexdigest()
    stamp = folder / ".downloaded"
    if not (stamp.exists() and stamp.read_text() == key):
        print(f"downloading wheels for {platform} ...", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.whl"):  # a version bump must not ship old and new side by side
            stale.unlink()
        (folder / "constraints.txt").write_text(constraints)
        subprocess.run([str(PYTHON), "-m", "pip", *argv], cwd=folder, check=True)
        stamp.write_text(key)
    return [wheel for wheel in sorted(folder.glob("*.whl"))
            if wheel.name.split("-")[0].lower() not in BUNDLED_WITH_BLENDER]


def _manifest_for_zip(manifest: str, wheel_names: list[str]) -> str:
    """The manifest plus ``platforms`` and ``wheels``, placed before the first table as top-level keys.

    Blender reads ``wheels`` from the installed manifest's top level when it installs
    them (a ``[build.generated]`` table is only honoured by its validator).
    """
    import re

    def toml_list(items: list[str]) -> str:
        return "[\n" + "".join(f'  "{item}",\n' for item in items) + "]\n"

    generated = (f"# Added by build.py extension\nplatforms = {toml_list(list(EXTENSION_PLATFORMS))}"
                 f"wheels = {toml_list([f'./wheels/{name}' for name in wheel_names])}\n")
    first_table = re.search(r"^\[", manifest, re.MULTILINE)
    cut = first_table.start() if first_table else len(manifest)
    return manifest[:cut] + generated + manifest[cut:]


def _python_files(top: Path) -> list[Path]:
    """Sources and package data, without caches or placeholders."""
    return sorted(path for path in top.rglob("*")
                  if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".json"))


COMMANDS = {"demo": demo, "test": test, "extension": extension}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    ensure_venv()
    sys.exit(COMMANDS[sys.argv[1]]())


if __name__ == "__main__":
    main()
