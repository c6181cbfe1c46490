"""Reclaiming the local farm's disk space: ``farm clean`` and the size cap, least recently used first.

The state keeps every datum that ever succeeded, so that a rerun resumes and going back
to an earlier version reuses its tiles; without this it only grows (each scene edit
stores a new set of float EXR tiles). What ``cache_inventory`` lists can be removed: a
whole job, or one stale datum (one no job's repo shows any more). The cap removes them
oldest use first until the state fits; ``farm clean`` removes a job, everything unused for
N days, or everything.

Never removed: anything of a job a render is using now. Every render holds its job's
``job_lock``; the cleaner takes each job's lock without waiting before it touches the
job, and names and skips a job whose lock is held. Under the cap the current run's job is
kept whole (its stale datums may go). Live farms' work folders are kept (``work_dirs``),
and so are the out-claims that stop two scenes overwriting each other's frames in one folder.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from farm_pipelines.errors import BadInput
from farm_pipelines.local import work_dirs
from farm_pipelines.local.cache_inventory import (
    ORPHAN_AGE_S,
    Inventory,
    Unit,
    state_bytes,
    store_orphans,
    take_inventory,
)
from farm_pipelines.local.disk_space import Freed, remove_file, remove_tree

LIMIT_ENV = "FARM_CACHE_LIMIT"
#: The default cap: 20 GB, or a quarter of the disk holding the state if that is less.
DEFAULT_LIMIT = 20 * 10**9
DISK_SHARE = 0.25
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


@dataclass
class Cleaned:
    """What one cleaning removed, and the jobs it left alone because a render holds them."""

    freed: Freed = field(default_factory=Freed)
    jobs: list[str] = field(default_factory=list)
    datums: int = 0
    run_dirs: int = 0
    store_files: int = 0
    leftovers: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def anything(self) -> bool:
        """Whether there is something to say: a file removed, or a job skipped."""
        return bool(self.freed.files or self.skipped)

    def lines(self) -> list[str]:
        parts = [f"{len(self.jobs)} job(s)" + (f" ({', '.join(self.jobs)})" if self.jobs else ""),
                 f"{self.datums} stored datum(s) no job shows any more",
                 f"{self.run_dirs} killed run(s)' work folder(s)",
                 f"{self.store_files} carried file(s) no job uses",
                 f"{self.leftovers} leftover(s) of interrupted runs"]
        return [f"freed {self.freed.describe()}: {', '.join(parts)}",
                *(f"skipped job {job}: a render of it is running (run farm clean again once it is done)"
                  for job in self.skipped)]


def parse_size(text: str) -> int | None:
    """``20G``, ``500M``, ``1.5T``, ``0`` (decimal units, as the sizes printed) in bytes; ``none`` is no cap."""
    if text.strip().lower() in ("none", "off", "unlimited"):
        return None
    match = _SIZE.match(text)
    if not match:
        raise BadInput(f"cache size {text!r} is not a size such as 20G, 500M or 1.5T (or none for no cap)")
    return int(float(match[1]) * _UNITS[match[2].lower()])


def cache_limit(root: Path, env: Mapping[str, str] = os.environ) -> int | None:
    """The cap for the state at ``root``: ``FARM_CACHE_LIMIT``, else 20 GB or a quarter of its disk if less."""
    if env.get(LIMIT_ENV, "").strip():
        try:
            return parse_size(env[LIMIT_ENV])
        except BadInput as error:
            raise BadInput(f"{LIMIT_ENV}: {error}") from None
    disk = Path(root)
    while not disk.exists():
        disk = disk.parent
    return min(DEFAULT_LIMIT, int(shutil.disk_usage(disk).total * DISK_SHARE))


def enforce_limit(root: Path, keep_job: str, limit: int | None) -> Cleaned:
    """Bring the state under ``limit`` bytes, least recently used first; ``keep_job`` (the caller's,
    whose lock it holds) is never removed, only its datums no repo shows. ``None`` is no cap."""
    if limit is None or state_bytes(Path(root)) <= limit:  # one walk, without the repos: the usual case
        return Cleaned()
    return _clean(Path(root), keep_job=keep_job, limit=limit)


def clean(root: Path, *, job: str | None = None, older_than_days: float | None = None,
          everything: bool = False, limit: int | None = None) -> Cleaned:
    """``farm clean``: one ``job``, all unused for ``older_than_days``, ``everything``, or down to ``limit``.

    Each also removes killed runs' work folders, leftovers of interrupted runs, and the
    carried files no job folder links any more.
    """
    return _clean(Path(root), job=job, cutoff=None if older_than_days is None else
                  time.time() - older_than_days * 86400, everything=everything, limit=limit)


def _clean(root: Path, *, keep_job: str | None = None, job: str | None = None, cutoff: float | None = None,
           everything: bool = False, limit: int | None = None) -> Cleaned:
    cleaned = Cleaned()
    cleaned.run_dirs, freed = work_dirs.remove_stale(root)
    cleaned.freed.add(freed)
    inventory = take_inventory(root)
    if job is not None and not _known(inventory, job):
        raise BadInput(f"no job named {job!r} in {root}; farm clean --list names the jobs there")
    locks = _JobLocks(root, keep_job)
    try:
        total = inventory.total_bytes
        for unit in inventory.leftovers:
            if _leftover_removable(unit, job, keep_job) and locks.free(unit.job):
                total -= _remove(unit, cleaned)
                cleaned.leftovers += 1
        total -= _prune_store(root, cleaned)
        candidates = [u for u in [*inventory.jobs.values(), *inventory.stale_datums]
                      if not (u.kind == "job" and u.job == keep_job)]
        for unit in sorted(candidates, key=lambda u: u.last_used):
            if limit is not None and total <= limit:
                break
            wanted = limit is not None or everything or (job is not None and unit.job == job) \
                or (cutoff is not None and unit.last_used < cutoff)
            if not wanted or not locks.free(unit.job):
                continue
            total -= _remove(unit, cleaned)
            if unit.kind == "job":
                cleaned.jobs.append(unit.job or "")
                total -= _prune_store(root, cleaned)
            else:
                cleaned.datums += 1
    finally:
        locks.close()
    cleaned.skipped = sorted(locks.busy)
    return cleaned


def _known(inventory: Inventory, job: str) -> bool:
    return job in inventory.jobs or any(u.job == job for u in [*inventory.stale_datums, *inventory.leftovers])


def _leftover_removable(unit: Unit, job: str | None, keep_job: str | None) -> bool:
    """A leftover of ``job`` when cleaning one; never the running job's; one of no known job once it is old."""
    if job is not None and unit.job != job or unit.job is not None and unit.job == keep_job:
        return False
    return unit.job is not None or time.time() - unit.last_used > ORPHAN_AGE_S  # else maybe a prepare in progress


def _remove(unit: Unit, cleaned: Cleaned) -> int:
    """Remove the unit's folders (its job's lock is held); the bytes freed."""
    freed = Freed()
    for path in unit.paths:
        freed.add(remove_tree(path))
    cleaned.freed.add(freed)
    return freed.bytes


def _prune_store(root: Path, cleaned: Cleaned) -> int:
    """Remove ``prepared/.files`` contents no job folder links; the bytes freed.

    A prepare running now may have just stored a file it has not linked yet: ``FileStore.link``
    stores it again from its source if it vanished in between.
    """
    freed = Freed()
    for path in store_orphans(root / "prepared" / ".files"):
        freed.add(remove_file(path))
        cleaned.store_files += 1
    cleaned.freed.add(freed)
    return freed.bytes


class _JobLocks:
    """Each job's ``locks/<job>.lock``, taken without waiting and held until the cleaning ends.

    ``ours`` is the job whose lock the caller already holds (the run enforcing the cap).
    """

    def __init__(self, root: Path, ours: str | None) -> None:
        self.folder = root / "locks"
        self.ours = ours
        self.busy: set[str] = set()
        self._held: dict[str, IO[str]] = {}

    def free(self, job: str | None) -> bool:
        if job is None or job == self.ours or job in self._held:
            return True
        if job in self.busy:
            return False
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.folder / f"{job}.lock", "a", encoding="utf-8")  # held until close()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            self.busy.add(job)
            return False
        self._held[job] = handle
        return True

    def close(self) -> None:
        for handle in self._held.values():
            handle.close()
        self._held.clear()


def job_summaries(root: Path) -> list[str]:
    """``farm clean --list``: each job with its last use and whether a render holds it, oldest first."""
    inventory = take_inventory(Path(root))
    locks = _JobLocks(Path(root), None)
    try:
        lines = []
        for unit in sorted(inventory.jobs.values(), key=lambda u: u.last_used):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(unit.last_used)) if unit.last_used else "never"
            state = "" if locks.free(unit.job) else "\t(a render of it is running)"
            lines.append(f"{unit.job}\tlast used {when}{state}")
    finally:
        locks.close()
    stale = inventory.stale_datums
    lines.append(f"{len(stale)} stored datum(s) no job shows any more; state {inventory.total_bytes / 1e6:.1f} MB")
    return lines
