"""What the local farm's state holds, grouped into what can be removed together, and when each was last used.

Two kinds of thing can go (``cache`` decides which):

* a **job**: ``prepared/<job>``, ``repos/*/<job>``, ``logs/*/<job>`` and every stored datum
  whose outputs are that job's (a datum writes under ``<job>/``, so its record names its job);
* a **stale datum**: a stored datum that no job's published repo links any more, such as
  the tiles of a scene version since edited. It is kept only so that going back reuses it.

A job was last used when a run last published its repos or reused one of its datums; a
datum when it was committed or last reused (``store.DatumStore.is_done`` touches its
record). Leftovers of killed runs (hidden staging and ``.old`` folders, live views) are
listed with the jobs they belong to.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from farm_pipelines.local.disk_space import on_disk
from farm_pipelines.local.store import RECORD, recorded_files

#: A hidden leftover whose job cannot be told (a killed prepare's staging folder, a half-written
#: stored file) is removed once it is older than this: no prepare or copy takes that long.
ORPHAN_AGE_S = 24 * 3600
_STAGED = re.compile(r"^\.(?P<job>.+?)(\.old)?\.[0-9a-f]{8}$")  # store.publish's and job_folder.swap_in's


@dataclass
class Unit:
    """Folders removed together, the job whose lock guards them (None: no job's), and their last use."""

    kind: str  # "job", "datum" or "leftover"
    label: str
    job: str | None
    paths: list[Path] = field(default_factory=list)
    last_used: float = 0.0

    def used(self, when: float) -> None:
        self.last_used = max(self.last_used, when)


@dataclass
class Inventory:
    """The jobs, the stale datums, the leftovers and the bytes the whole state takes on disk."""

    jobs: dict[str, Unit]
    stale_datums: list[Unit]
    leftovers: list[Unit]
    total_bytes: int


def take_inventory(root: Path) -> Inventory:
    """Read the state under ``root``; the work folders are ``work_dirs``' and are counted, not listed."""
    root = Path(root)
    jobs: dict[str, Unit] = {}
    leftovers: list[Unit] = []

    def job(name: str) -> Unit:
        return jobs.setdefault(name, Unit("job", f"job {name}", name))

    published: set[tuple[int, int]] = set()
    for repo in _folders(root / "repos"):
        if repo.name.startswith(".live-"):  # a killed run's live view: repos/.live-x/<repo>/<job>
            owners = {j.name for r in _folders(repo) for j in _folders(r)}
            owner = owners.pop() if len(owners) == 1 else None
            leftovers.append(Unit("leftover", f"live view {repo.name}", owner, [repo], _mtime(repo)))
            continue
        for folder in _folders(repo):
            staged = _STAGED.match(folder.name)
            if staged:
                leftovers.append(Unit("leftover", f"staging {repo.name}/{folder.name}", staged["job"], [folder],
                                      _mtime(folder)))
                continue
            unit = job(folder.name)
            unit.paths.append(folder)
            unit.used(_mtime(folder))
            published.update(_inodes(folder))
    prepared = root / "prepared"
    for folder in _folders(prepared):
        staged = _STAGED.match(folder.name)
        if folder.name == ".files":
            continue
        if staged:
            leftovers.append(Unit("leftover", f"old job folder {folder.name}", staged["job"], [folder], _mtime(folder)))
        elif folder.name.startswith("."):  # .staging-*: a prepare in progress, or a killed one's
            leftovers.append(Unit("leftover", f"staging {folder.name}", None, [folder], _mtime(folder)))
        else:
            job(folder.name).paths.append(folder)
            job(folder.name).used(_mtime(folder / "job.json"))
    for pipeline in _folders(root / "logs"):
        for folder in _folders(pipeline):
            job(folder.name).paths.append(folder)
    stale: list[Unit] = []
    for pipeline in _folders(root / "datums"):
        for folder in _folders(pipeline):
            files = recorded_files(folder) or []
            owners = {rel.split("/", 1)[0] for rel in files}
            owner = owners.pop() if len(owners) == 1 else None
            used = _mtime(folder / RECORD) or _mtime(folder)
            if owner and published.intersection(_inodes(folder)):
                job(owner).paths.append(folder)
                job(owner).used(used)
            else:
                stale.append(Unit("datum", f"datum {pipeline.name}/{folder.name}", owner, [folder], used))
    return Inventory(jobs, stale, leftovers, state_bytes(root))


def store_orphans(store: Path) -> list[Path]:
    """The file store's contents no job folder links any more (link count 1), and old half-written copies."""
    found = []
    now = time.time()
    for entry in _entries(store):
        info = entry.stat(follow_symlinks=False)
        if entry.name.startswith("."):
            if now - info.st_mtime > ORPHAN_AGE_S:
                found.append(Path(entry.path))
        elif info.st_nlink == 1:
            found.append(Path(entry.path))
    return found


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _folders(folder: Path) -> list[Path]:
    return [Path(e.path) for e in _entries(folder) if e.is_dir(follow_symlinks=False)]


def _mtime(path: Path) -> float:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


def _inodes(folder: Path) -> set[tuple[int, int]]:
    found = set()
    for top, _dirs, files in os.walk(folder):
        for name in files:
            try:
                info = os.lstat(os.path.join(top, name))
            except FileNotFoundError:  # a running farm's file, gone since the listing
                continue
            found.add((info.st_dev, info.st_ino))
    return found


def state_bytes(root: Path) -> int:
    """What the state takes on disk, each hard-linked file once.

    ``repos/`` is left out: it holds only hard links to stored datums and job folders
    (published or shown live), so walking it would cost time and add nothing.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    for top, dirs, files in os.walk(root):
        if top == os.fspath(root) and "repos" in dirs:
            dirs.remove("repos")
        for name in files:
            try:
                info = os.lstat(os.path.join(top, name))
            except FileNotFoundError:  # a running farm's file, gone since the listing
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += on_disk(info)
    return total
