"""What removing files from the farm's state gives back, counted as the files go.

The state is full of hard links (a published repo links its datums' files, a job
folder links the file store's copies), so a file's size is freed only when its last
link goes. Counting at unlink time, from the link count the file has just then, gives
the space really returned to the disk, with no second walk and no guess.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Freed:
    """Space handed back to the disk (bytes of the blocks of files whose last link went) and files removed."""

    bytes: int = 0
    files: int = 0

    def add(self, other: Freed) -> None:
        self.bytes += other.bytes
        self.files += other.files

    def describe(self) -> str:
        return f"{self.bytes / 1e6:.1f} MB in {self.files} file(s)"


def on_disk(info: os.stat_result) -> int:
    """The bytes a file takes on disk (its blocks), which is what removing its last link frees."""
    return info.st_blocks * 512 if hasattr(info, "st_blocks") else info.st_size


def remove_file(path: Path | str) -> Freed:
    """Unlink one file; it frees its blocks only if this was its last link."""
    try:
        info = os.lstat(path)
        os.unlink(path)
    except FileNotFoundError:
        return Freed()
    return Freed(on_disk(info) if info.st_nlink == 1 else 0, 1)


def remove_tree(path: Path) -> Freed:
    """Remove ``path`` (a folder or a file) and everything under it; what it freed.

    Walks bottom-up without following links, so a symlink in the state never leads the
    removal outside it. Gone already is fine: two cleaners may meet on a dead run's folder.
    """
    freed = Freed()
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return remove_file(path)
    except FileNotFoundError:
        return freed
    for top, dirs, files in os.walk(path, topdown=False):
        for name in files:
            freed.add(remove_file(os.path.join(top, name)))
        for name in dirs:
            full = os.path.join(top, name)
            if os.path.islink(full):  # os.walk lists a link to a folder among the folders
                freed.add(remove_file(full))
            else:
                _rmdir(full)
    _rmdir(path)
    return freed


def _rmdir(path: Path | str) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
