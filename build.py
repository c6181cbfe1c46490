#!/usr/bin/env python3
"""Project entry point; needs nothing but Python 3.13 or 3.11, the Pythons that PyPI has Blender (bpy) for.

    python3 build.py setup      set up .venv with the pinned dependencies (then .venv/bin/farm ...)
    python3 build.py demo       set up .venv, make the demo scene, render it on the local farm
    python3 build.py test       set up .venv and the Debian systems with real Blender, run the whole test suite
    python3 build.py extension  build the Blender add-on, one zip per platform:
                                dist/pachyderm_farm-<version>-<platform>.zip
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".requirements.sha256"

#: The Pythons PyPI has bpy for -> the pins of a venv on that Python (bpy 5.0 on 3.11, bpy 5.2 LTS on 3.13).
REQUIREMENTS = {(3, 11): "requirements.txt", (3, 13): "requirements-py313.txt"}


def ensure_python() -> None:
    """Go on if bpy is built for this Python; else re-run with one on PATH that it is built for, or say what to get."""
    if sys.version_info[:2] in REQUIREMENTS:
        return
    this = "{}.{}".format(*sys.version_info[:2])
    for version in sorted(REQUIREMENTS, reverse=True):
        found = shutil.which("python{}.{}".format(*version))
        if found and _version_of(found) == version:
            print(f"Python {this} has no bpy: running build.py with {found}", flush=True)
            os.execv(found, [found, str(Path(__file__).resolve()), *sys.argv[1:]])
    print(f"error: build.py needs Python 3.13 or 3.11 (bpy, Blender as a module, is built only for those) and "
          f"this is {this}; install python3.13 and python3.13-venv, then run it again", file=sys.stderr)
    sys.exit(2)


def _version_of(python: str) -> tuple[int, int] | None:
    """What a ``pythonX.Y`` on PATH really runs: a pyenv shim can name a version that is not installed."""
    try:
        done = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = done.stdout.split()
    return (int(parts[0]), int(parts[1])) if done.returncode == 0 and len(parts) == 2 else None


def ensure_venv() -> None:
    """Create .venv on this Python and install its pinned requirements, skipping work already done."""
    version = sys.version_info[:2]
    if PYTHON.exists() and not (VENV / "lib" / "python{}.{}".format(*version)).is_dir():
        print("replacing .venv, which another Python made ...", flush=True)
        shutil.rmtree(VENV)
    if not PYTHON.exists():
        print("creating .venv with Python {}.{} ...".format(*version), flush=True)
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except (subprocess.CalledProcessError, OSError):
            shutil.rmtree(VENV, ignore_errors=True)
            _fail(2, "cannot create .venv with pip; on Debian or Ubuntu: apt-get install python{}.{}-venv"
                  .format(*version))
    requirements = REQUIREMENTS[version]
    wanted = _requirements_digest(requirements)
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    print(f"installing the dependencies pinned in {requirements} into .venv (bpy is about 800 MB) ...", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    for argv in ([*pip, "-r", requirements, "-r", "requirements-dev.txt"], [*pip, "--no-deps", "-e", "."]):
        if subprocess.run(argv, cwd=ROOT).returncode != 0:
            _fail(1, f"installing into .venv failed (pip says why above): {' '.join(argv[3:])}")
    STAMP.write_text(wanted)


def _requirements_digest(requirements: str) -> str:
    digest = hashlib.sha256(sys.version.encode())
    for name in (requirements, "requirements-dev.txt", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def _fail(code: int, message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def run(*args: str) -> int:
    return subprocess.run([str(PYTHON), *args], cwd=ROOT).returncode


def setup() -> int:
    """Nothing beyond what every command does first: .venv on this Python, with its pins."""
    return 0


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
    """The whole suite; the real-Blender tests run in Debian systems, made first where missing (once, minutes)."""
    for suite in _debian_suites():
        log = ROOT / "build" / "debian" / f"{suite}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as errors:
            code = subprocess.run([sys.executable, str(ROOT / "tests" / "debian_root.py"), "ensure", suite],
                                  cwd=ROOT, stderr=errors).returncode
        if code != 0:
            lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
            reason = lines[-1] if lines else f"making the Debian {suite} system failed"
            print(f"{reason} (log: {log.relative_to(ROOT)})", file=sys.stderr)
            return code
        log.unlink()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([str(PYTHON), "-m", "pytest", "-q", *sys.argv[2:]], cwd=ROOT, env=env).returncode


def _debian_suites() -> list[str]:
    """The suites tests/debian_root.py knows (it needs only the standard library, so any Python can load it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("debian_root", ROOT / "tests" / "debian_root.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sorted(module.PACKAGES)


#: The zip holds the add-on at its top and the farm code in this folder, which holds nothing but
#: ``farm_pipelines/``: the add-on puts only this folder on ``sys.path`` (addon/__init__.py), so its own
#: modules (``jobs``, ``images``, ...) never shadow another add-on's.
FARM_FOLDER = "farm"
#: The wheels every zip ships (for its platform and Pythons), every one pinned: no resolving at build time.
EXTENSION_WHEELS = "requirements-extension.txt"
#: Blender platform -> pip ``--platform`` tags whose wheels run there (pip does not widen manylinux).
EXTENSION_PLATFORMS = {
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "macos-arm64": ["macosx_13_0_arm64"],
    "macos-x64": ["macosx_13_0_x86_64"],
    "windows-x64": ["win_amd64"],
}
#: The Pythons that supported Blenders embed -> the platforms each is embedded on.
EXTENSION_PYTHONS = {
    (3, 11): tuple(EXTENSION_PLATFORMS),  # Blender 4.5 LTS and 5.0
    (3, 13): tuple(EXTENSION_PLATFORMS),  # Blender 5.1, 5.2 LTS and 5.3
    (3, 14): ("linux-x64",),  # Linux distributions' own builds, such as Debian's blender 5.2
}


def extension() -> int:
    """One zip per platform, named as ``blender -c extension build --split-platforms`` names them.

    Blender derives the Pythons a zip supports from all the wheels it lists, so a
    zip for every platform would claim Python 3.14 on macOS and Windows too, where it
    has no 3.14 wheels; it would also be about 256 MB, where each platform's is 50-85.
    """
    import tomllib

    manifest = (ROOT / "blender_manifest.toml").read_text(encoding="utf-8")
    fields = tomllib.loads(manifest)
    built = []
    for platform in EXTENSION_PLATFORMS:
        wheels = _platform_wheels(platform)
        archive = extension_zip(fields["id"], fields["version"], platform)
        archive.parent.mkdir(exist_ok=True)
        partial = archive.with_suffix(".zip.partial")
        try:
            _write_extension(partial, _manifest_for_zip(manifest, platform, sorted(wheels)), wheels)
            os.replace(partial, archive)
        finally:
            partial.unlink(missing_ok=True)
        built.append(archive)
        pythons = ", ".join("{}.{}".format(*python) for python in _pythons(platform))
        print(f"{archive.relative_to(ROOT)}: {archive.stat().st_size / 1e6:.1f} MB, {len(wheels)} wheels, "
              f"Python {pythons}")
    for stale in archive.parent.glob(f"{fields['id']}-*.zip"):  # e.g. the all-platform zip of older builds
        if stale not in built:
            stale.unlink()
    return 0


def extension_zip(extension_id: str, version: str, platform: str) -> Path:
    return ROOT / "dist" / f"{extension_id}-{version}-{platform.replace('-', '_')}.zip"


def _pythons(platform: str) -> list[tuple[int, int]]:
    return [python for python, platforms in EXTENSION_PYTHONS.items() if platform in platforms]


def _write_extension(path: Path, manifest: str, wheels: dict[str, Path]) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("blender_manifest.toml", manifest)
        for source in _python_files(ROOT / "addon"):
            bundle.write(source, source.relative_to(ROOT / "addon").as_posix())
        for source in _python_files(ROOT / "farm_pipelines"):
            bundle.write(source, f"{FARM_FOLDER}/{source.relative_to(ROOT).as_posix()}")
        for name, wheel in sorted(wheels.items()):
            # Wheels are zips already; storing them saves minutes of pointless recompression.
            bundle.write(wheel, f"wheels/{name}", compress_type=zipfile.ZIP_STORED)


def _platform_wheels(platform: str) -> dict[str, Path]:
    """The pinned wheels of every Python on one platform, downloaded once into build/wheels/PLATFORM/.

    One folder for all its Pythons: a wheel they share (pure Python, or OpenCV's
    stable-ABI build) is downloaded and shipped once.
    """
    folder = ROOT / "build" / "wheels" / platform
    pins = (ROOT / EXTENSION_WHEELS).read_text()
    downloads = [["download", "--disable-pip-version-check", "-q", "--no-deps", "--only-binary=:all:",
                  "--python-version", "{}.{}".format(*python), "--implementation", "cp",
                  "--abi", "cp{}{}".format(*python), "--abi", "abi3", "--abi", "none",
                  *(arg for name in EXTENSION_PLATFORMS[platform] for arg in ("--platform", name))]
                 for python in _pythons(platform)]
    key = hashlib.sha256(repr((downloads, pins)).encode()).hexdigest()
    stamp = folder / ".downloaded"
    if not (stamp.exists() and stamp.read_text() == key):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.whl"):  # a version bump must not ship old and new side by side
            stale.unlink()
        for python, argv in zip(_pythons(platform), downloads, strict=True):
            print(f"downloading wheels for {platform}, Python {python[0]}.{python[1]} ...", flush=True)
            if subprocess.run([str(PYTHON), "-m", "pip", *argv, "-r", str(ROOT / EXTENSION_WHEELS), "-d", "."],
                              cwd=folder).returncode != 0:
                _fail(1, f"downloading the wheels for {platform}, Python {python[0]}.{python[1]} failed (pip says "
                      "why above); run it again")
        stamp.write_text(key)
    return {wheel.name: wheel for wheel in sorted(folder.glob("*.whl"))}


def _manifest_for_zip(manifest: str, platform: str, wheel_names: list[str]) -> str:
    """The manifest plus ``platforms`` and ``wheels`` for one platform, as top-level keys before the first table.

    Blender reads ``wheels`` from the installed manifest's top level when it checks
    and installs them (a ``[build.generated]`` table is only honoured when it reads
    a zip), so the keys go there, and name only what this zip holds.
    """
    import re

    def toml_list(items: list[str]) -> str:
        return "[\n" + "".join(f'  "{item}",\n' for item in items) + "]\n"

    generated = (f"# Added by build.py extension\nplatforms = {toml_list([platform])}"
                 f"wheels = {toml_list([f'./wheels/{name}' for name in wheel_names])}\n")
    first_table = re.search(r"^\[", manifest, re.MULTILINE)
    cut = first_table.start() if first_table else len(manifest)
    return manifest[:cut] + generated + manifest[cut:]


def _python_files(top: Path) -> list[Path]:
    """Sources and package data, without caches or placeholders."""
    return sorted(path for path in top.rglob("*")
                  if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".json"))


COMMANDS = {"setup": setup, "demo": demo, "test": test, "extension": extension}


def main() -> None:
    ensure_python()
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; use one of: {', '.join(COMMANDS)}" if command else __doc__,
              file=sys.stderr)
        sys.exit(2)
    ensure_venv()
    sys.exit(COMMANDS[command]())


if __name__ == "__main__":
    main()
