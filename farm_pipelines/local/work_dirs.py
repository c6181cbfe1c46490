"""Worker run folders (``<state>/work/<pipeline>-<8 hex>``), each locked by the farm process using it.

A run folder holds every worker's /pfs of one stage: hard links to inputs, outputs
not committed yet. A farm killed with ``kill -9`` never removes its own (one report:
3.5 GB and 598,000 files), so the next run removes them. Two farms may share one state
directory (two jobs rendered at once), so a folder's age says nothing about whether it
is in use. Instead the process that makes a folder holds an ``flock`` on its ``.lock``
for as long as it uses it; the kernel drops that lock when the process dies, however it
dies, so a folder whose lock can be taken belongs to a dead run.

A folder is made hidden (``.<name>``), locked, then renamed to its name: a visible
folder is locked from the moment it appears.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from pathlib import Path
from typing import IO

from farm_pipelines.local.disk_space import Freed, remove_tree

LOCK_NAME = ".lock"
#: A hidden folder younger than this may be one a live farm is locking right now.
_BEING_MADE_S = 60.0
#: A folder with no lock file was made by a farm from before run folders were locked (or is being
#: made, if hidden): it may be running still, so it is removed only once it is this old.
_UNLOCKED_AGE_S = 24 * 3600.0


class RunDir:
    """A run folder and the open, locked file that says its farm is alive."""

    def __init__(self, path: Path, lock: IO[str]) -> None:
        self.path = path
        self._lock = lock

    def remove(self) -> None:
        """Remove the folder, then let go of its lock (held to the end, so nobody else removes it meanwhile)."""
        if self._lock.closed:
            return
        remove_tree(self.path)
        self._lock.close()


def new_run_dir(root: Path, pipeline: str) -> RunDir:
    """Make ``<root>/work/<pipeline>-<8 hex>``, locked by this process until ``RunDir.remove`` or its death."""
    work = Path(root) / "work"
    work.mkdir(parents=True, exist_ok=True)
    name = f"{pipeline}-{uuid.uuid4().hex[:8]}"
    hidden = work / f".{name}"
    hidden.mkdir()
    lock = open(hidden / LOCK_NAME, "a", encoding="utf-8")  # held for the folder's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else can hold it
        os.replace(hidden, work / name)  # the open lock file moves with its folder
    except BaseException:
        lock.close()
        remove_tree(hidden)
        raise
    return RunDir(work / name, lock)


def remove_stale(root: Path) -> tuple[int, Freed]:
    """Remove the run folders of farms that died: (how many folders, what they freed).

    A folder whose lock is held by a live farm (this process's own included) is kept. A
    folder with no lock file is removed once it is a day old.
    """
    work = Path(root) / "work"
    removed, freed = 0, Freed()
    try:
        entries = list(os.scandir(work))
    except FileNotFoundError:
        return removed, freed
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        try:
            age = time.time() - entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:  # another cleaner removed it meanwhile
            continue
        if entry.name.startswith(".") and age < _BEING_MADE_S:
            continue
        try:
            lock = open(path / LOCK_NAME, encoding="utf-8")  # held while removing
        except FileNotFoundError:
            if age > _UNLOCKED_AGE_S:
                freed.add(remove_tree(path))
                removed += 1
            continue
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live farm's
            freed.add(remove_tree(path))
            removed += 1
    return removed, freed
