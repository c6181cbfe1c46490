"""Which files a job may carry: regular files only, nothing from a system folder, no folder that holds
the scene, and never the farm's own output.

A pipe, a device or a kernel file could be read for ever; a bake folder at ``/``, the home
folder or one holding the scene would copy a whole disk; a frame the farm delivered (the
add-on shows finished frames in Blender, so the next job's copy names them) must not become
an input of the next job. ``dependencies`` asks these rules for every asset it traces.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: ``C:\``, ``C:/`` or ``\\server\share``: a path only Windows can open.
_WINDOWS_ABSOLUTE = re.compile(rb"^([A-Za-z]:[\\/]|\\\\)")
#: Devices and kernel files: reading one may never end (``/dev/zero``, ``/proc/kcore``).
_SYSTEM_FOLDERS = (Path("/dev"), Path("/proc"), Path("/sys"))


def regular(path: Path) -> bool:
    """Only regular files travel: a pipe, a device or a kernel file could be read forever."""
    return path.is_file() and not any(inside(real(path), system) for system in _SYSTEM_FOLDERS)


def refused_folder(folder: Path, guarded: list[Path]) -> str | None:
    """Why a folder must not be carried whole: it is ``/``, the home folder, a system one, or holds
    one of the ``guarded`` folders (the scene's)."""
    found = real(folder)
    if found == Path("/") or found == real(Path.home()):
        return "the root or home folder"
    if any(inside(found, system) for system in _SYSTEM_FOLDERS):
        return "a system folder"
    if any(inside(guard, found) for guard in guarded):
        return "it holds the scene's own folder"
    return None


def windows_only(path: bytes) -> bool:
    """A path as a blend stores it that names a file only Windows can open (and this is not Windows)."""
    return _WINDOWS_ABSOLUTE.match(path) is not None and os.name != "nt"


def farm_output(path: Path, out_dir: Path | None) -> bool:
    """Whether ``path`` lies in the folder the farm delivers this job's frames to."""
    return out_dir is not None and inside(path, out_dir)


def real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def inside(path: Path, folder: Path) -> bool:
    return real(path).is_relative_to(real(folder))
