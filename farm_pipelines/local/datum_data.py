"""One datum attempt's data, laid out as a pachd worker lays it out: fresh copies, symlinked into /pfs.

v2.7.0 ``src/server/worker/datum/datum.go``, ``Datum.withData``: every attempt gets
``<set storage root>/pfs/<datum id>/`` with ``out/`` and ``.env``, and each input
downloaded into ``<that>/<input name>/<path in repo>`` as new files
(``downloadData`` -> ``src/internal/pfssync/sync.go``, ``Download``: a tar import,
never links); the folder is removed when the attempt ends. ``/pfs/<input>``,
``/pfs/out`` and ``/pfs/.env`` are symlinks into it, re-made per datum
(``src/server/worker/driver/driver_unix.go``, ``linkData`` / ``unlinkData``).

An input marked ``lazy`` gets a named pipe per file instead
(``pfssync/pipe_unix.go``, ``makePipe``): a writer blocks until a reader opens
the pipe, and only then streams the file; pipes nobody opened are released when
the attempt ends without fetching anything (``sync.go``, ``closePipes``).
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from farm_pipelines.datums import Datum


class _LazyPipes:
    """The named pipes of one attempt's lazy inputs and their blocked writers."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.paths: list[str] = []
        self.threads: list[threading.Thread] = []

    def make(self, source: str, path: str) -> None:
        os.mkfifo(path, 0o666)
        self.paths.append(path)
        thread = threading.Thread(target=self._write, args=(source, path), daemon=True)
        thread.start()
        self.threads.append(thread)

    def _write(self, source: str, path: str) -> None:
        fd = os.open(path, os.O_WRONLY)  # blocks until a reader opens it, or ``close`` does
        try:
            if self.done.is_set():
                return  # released unread: nothing is fetched
            with open(source, "rb") as data:
                while chunk := data.read(1 << 20):
                    os.write(fd, chunk)
        except OSError as error:  # the reader stopped reading early
            if error.errno != errno.EPIPE:
                raise
        finally:
            os.close(fd)

    def close(self) -> None:
        self.done.set()
        readers = []
        for path in self.paths:  # open each pipe without blocking, so a writer still in open() returns
            readers.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        for thread in self.threads:
            thread.join(10)
        for fd in readers:
            os.close(fd)


def _copy_input(source: Path, destination: Path, lazy: bool, pipes: _LazyPipes) -> int:
    """Copy (or pipe) one input into the attempt's folder; returns the bytes downloaded."""
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    copied = 0
    for path in files:
        target = destination if path == source else destination / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        if lazy:
            pipes.make(str(path), str(target))
        else:
            shutil.copyfile(path, target)  # a new inode, as tar import writes
            copied += path.stat().st_size
    if source.is_dir():
        destination.mkdir(parents=True, exist_ok=True)
    return copied


@contextmanager
def datum_data(pfs: Path, set_root: Path, datum_id: str, datum: Datum, repos: Path, lazy: set[str],
               env: dict[str, str]) -> Iterator[Path]:
    """Lay out one attempt of ``datum`` under ``set_root`` and link it into ``pfs``; yields its folder."""
    folder = set_root / "pfs" / datum_id
    (folder / "out").mkdir(parents=True)
    pipes = _LazyPipes()
    try:
        (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()), encoding="utf-8")
        for item in datum.inputs:
            _copy_input(item.source(repos), folder / item.name / item.path.lstrip("/"), item.name in lazy, pipes)
        links = [".env", "out", *dict.fromkeys(item.name for item in datum.inputs)]
        for name in links:
            with suppress(FileNotFoundError):
                os.unlink(pfs / name)
            os.symlink(folder / name, pfs / name)
        yield folder
    finally:
        pipes.close()
        shutil.rmtree(folder, ignore_errors=True)
