"""The datum store: every succeeded datum's output, kept so that a run resumes where it stopped.

``datums/<pipeline>/<datum-id>/`` holds what one datum wrote, moved there from the
worker's ``/pfs/out`` in one rename, with a record of each file's size and SHA-256.
A datum whose files all still have their recorded content is done, as Pachyderm
skips datums it has processed; a damaged one (bit rot, a torn write, a few bytes
flipped) runs again, so running the same command again always heals. A stage's
output repo (``repos/<pipeline>/<job>``) is then published as the union of its
datums' outputs, hard-linked and swapped in at once, so readers see either the old
commit or the new one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from farm_pipelines.blend_cache import file_sha256

#: Inside a datum's output: size and SHA-256 of what it wrote, checked on resume. Its mtime is the
#: datum's last use (its commit, or its last reuse), which the cache's least-recently-used eviction reads.
RECORD = ".files.json"


class DatumStore:
    """``datums/`` and the published output repos under one farm state directory."""

    def __init__(self, root: Path, log: Callable[[str], None]) -> None:
        self.root = root
        self.repos = root / "repos"
        self.log = log
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._files: dict[tuple[str, str], list[str]] = {}  # (pipeline, datum id) -> what it wrote

    def datum_dir(self, pipeline: str, ident: str) -> Path:
        return self.root / "datums" / pipeline / ident  # ``make_room`` makes the pipeline's folder

    def make_room(self, pipeline: str) -> None:
        """Make the pipeline's folder, before the first commit lands there."""
        (self.root / "datums" / pipeline).mkdir(parents=True, exist_ok=True)

    def is_done(self, pipeline: str, ident: str) -> bool:
        """Done means committed and undamaged: every file it wrote still has its recorded size and hash.

        Checked before every reuse, the merged frames included (the merger's datum is checked
        on each run before its frames are delivered); a record without hashes (an older
        farm's) counts as damaged, so its datum runs again once. A datum found done is reused:
        its record's mtime is set to now, one system call, so the cache cap evicts the least
        recently used datums first (``cache``).
        """
        folder = self.datum_dir(pipeline, ident)
        record = folder / RECORD
        if not record.exists():
            return False
        try:
            written = json.loads(record.read_text(encoding="utf-8"))
        except ValueError:
            written = None
        for rel, entry in (written or {"": None}).items():
            path = folder / rel
            if not (isinstance(entry, list) and path.is_file() and path.stat().st_size == entry[0]
                    and file_sha256(path) == entry[1]):
                self.log(f"{pipeline}: output {rel or RECORD} is damaged; the datum will run again")
                shutil.rmtree(folder, ignore_errors=True)
                return False
        self._files[(pipeline, ident)] = list(written)
        with contextlib.suppress(OSError):  # a read-only state still resumes; it only forgets the use
            os.utime(record)
        return True

    def commit(self, pipeline: str, ident: str, out: Path | str) -> None:
        """Move a finished datum's /pfs/out into the store in one rename.

        Runs once per tile on the hand-off's critical path, so it spends few system
        calls: the record (a tile's hash costs well under a millisecond) is written in place
        (``out`` is private until the rename), and ``make_room`` has made the store's folder.
        """
        written = {rel: [os.stat(path).st_size, file_sha256(Path(path))] for rel, path in _visible_files(out)}
        with open(os.path.join(out, RECORD), "w", encoding="utf-8") as record:
            record.write(json.dumps(dict(sorted(written.items()))))
        self._files[(pipeline, ident)] = list(written)
        destination = self.datum_dir(pipeline, ident)
        try:
            os.replace(out, destination)
        except OSError as error:  # an old, damaged copy of this datum is in the way
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            shutil.rmtree(destination)
            os.replace(out, destination)

    def publish(self, pipeline: str, scope: str, ids: list[str]) -> None:
        """Make ``repos/<pipeline>/<scope>`` the union of the datums' outputs, swapped in at once."""
        base = self.repos / pipeline
        staging = base / f".{scope}.{uuid.uuid4().hex[:8]}"
        made: set[Path] = set()
        for ident in ids:
            # Each datum's file list is known from its commit or its resume check: no tree walks.
            folder = self.datum_dir(pipeline, ident)
            for rel in self._written(pipeline, ident):
                if not rel.startswith(f"{scope}/"):
                    continue
                path, target = folder / rel, staging / rel.removeprefix(f"{scope}/")
                if target.parent not in made:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    made.add(target.parent)
                os.link(path, target)
        staging.mkdir(parents=True, exist_ok=True)
        final = base / scope
        old = base / f".{scope}.old.{uuid.uuid4().hex[:8]}"
        if final.exists():
            os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)

    def _written(self, pipeline: str, ident: str) -> list[str]:
        if (pipeline, ident) not in self._files:
            record = self.datum_dir(pipeline, ident) / RECORD
            self._files[(pipeline, ident)] = list(json.loads(record.read_text(encoding="utf-8")))
        return self._files[(pipeline, ident)]

    def file_hash(self, path: Path) -> str:
        """SHA-256 of an input file, remembered while its size and mtime stay the same."""
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = file_sha256(path)
        return self._hashes[key]


def recorded_files(folder: Path) -> list[str] | None:
    """The files a stored datum's record lists (relative POSIX paths, each under its job's name), or None."""
    try:
        written = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return list(written) if isinstance(written, dict) else None


def _visible_files(folder: Path | str) -> Iterator[tuple[str, str]]:
    """(relative POSIX path, full path) of every file under ``folder``, hidden ones left out.

    ``os.walk`` and string slicing rather than ``Path.rglob``: it runs per tile.
    """
    start = len(os.fspath(folder).rstrip(os.sep)) + 1
    for top, _dirs, files in os.walk(folder):
        prefix = top[start:].replace(os.sep, "/")
        for name in files:
            if not name.startswith("."):
                yield (f"{prefix}/{name}" if prefix else name), os.path.join(top, name)
