"""Which third-party packages the farm needs are missing, named as pip names them.

They come as wheels inside the extension; a broken or partial install must be a
clear warning in the panel, not an ImportError traceback on the first click.
The check finds the packages without importing them (grpc, OpenCV and
python-pachyderm take a while to load) and is made once per backend, when the
add-on is enabled or first asked; the job's thread imports them when it runs.
"""

from __future__ import annotations

import functools
import importlib.util

#: Import name -> the package a user (or the extension's wheels) would install. The local farm serves
#: Pachyderm's Worker API itself, so it needs the Pachyderm client packages as well as the image ones.
PACHYDERM_CLIENT = {
    "python_pachyderm": "python-pachyderm",
    "grpc": "grpcio",
    "google.protobuf": "protobuf",
}
LOCAL_FARM = {
    **PACHYDERM_CLIENT,
    "cv2": "opencv-python-headless",
    "OpenEXR": "OpenEXR",
    "numpy": "numpy",
}
REQUIRED = {"LOCAL": LOCAL_FARM, "PACHYDERM": PACHYDERM_CLIENT}


@functools.cache
def missing(backend: str = "LOCAL") -> tuple[str, ...]:
    """Packages the ``backend`` ("LOCAL" or "PACHYDERM") needs that cannot be found; cached."""
    return tuple(package for module, package in REQUIRED[backend].items() if not _findable(module))


def recheck() -> None:
    """Forget what was found: on enabling, the wheels may have been installed or removed since."""
    missing.cache_clear()


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # the parent of a dotted name (``google``) is missing
        return False
    except ValueError:  # imported already, by a loader that sets no spec
        return True


def package_for(module: str) -> str | None:
    """The package that provides ``module`` (``cv2.data`` -> opencv-python-headless), if the farm needs it."""
    for name, package in LOCAL_FARM.items():
        if module == name or module.startswith(name + "."):
            return package
    return None


def message(absent: list[str] | tuple[str, ...]) -> str:
    return f"Missing dependencies: {', '.join(absent)}. Reinstall the Pachyderm Render Farm extension"
