"""A worker's own copy of each job's blend, found by the content hash the splitter recorded.

On Pachyderm every datum gets fresh copies of its inputs in a new folder, deleted
afterwards (pachyderm v2.7.0 ``src/server/worker/datum/datum.go``, ``Datum.withData``
/ ``downloadData``), and the user process is killed at the end of each datum set
(``src/server/worker/pipeline/transform/worker.go``, ``handleDatumSetBatching``). So
neither a file's inode nor the process outlives the tiles that share a blend. The
renderer's ``blends`` input is ``lazy``: pachd then puts a named pipe where the file
would be and fetches the blend only if the pipe is opened (``src/internal/pfssync/
pipe_unix.go``, ``makePipe``; a pipe never opened costs nothing, ``closePipes``). This
module opens the pipe only when the pod has no copy with that hash yet, and keeps
the copy under the pod's ``/tmp``, because Blender needs a seekable file: the user
container's ``/tmp`` is the ``user-tmp`` emptyDir (``src/server/pps/server/worker_rc.go``,
``workerPodSpec``), which lives as long as the pod, across the killed processes. A
regular file (the local farm, or a spec without ``lazy``) is used where it lies.

A job folder's carried files (``files/<key>/...``, ``farm_pipelines.dependencies``) are
pipes too; the blend refers to them as ``//files/<key>/...``, so they are fetched into
``<cache>/files/<key>/`` beside the cached blends. A key names its content, so a folder
already there is never fetched again, for any job that carries the same files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

from farm_pipelines.errors import FarmFailure

#: Where the copies live; default ``<tmp>/farm-blend-cache-<uid>``.
CACHE_ENV = "FARM_BLEND_CACHE"
#: Copies kept besides the newest: a worker renders one or two jobs at a time.
KEEP = 3
#: A copy used this recently is never evicted, so a process about to open it keeps it.
IN_USE_SECONDS = 600
#: Carried files unused this long are evicted.
FILES_UNUSED_SECONDS = 24 * 3600
_CHUNK = 1024 * 1024


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / f"farm-blend-cache-{os.getuid()}")


def local_blend(source: Path, sha256: str | None) -> tuple[Path, str]:
    """(a seekable file holding the blend, its content hash), reading ``source`` only when needed.

    ``sha256`` is the hash the splitter recorded; a tile from before it did so has none,
    and the blend is hashed here. A pipe's bytes are checked against the recorded hash,
    so a blend that changed after the split is one clear error, not a wrong frame.
    """
    source = Path(source)
    if not stat.S_ISFIFO(source.stat().st_mode):  # stat does not open the pipe
        return source, sha256 or file_sha256(source)
    folder = cache_dir()
    fetch_carried_files(source.parent / "files", folder / "files")
    if sha256:
        cached = folder / f"{sha256}.blend"
        if cached.is_file():
            os.utime(cached)  # marks it in use for eviction
            return cached, sha256
    folder.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as out, source.open("rb") as pipe:
            while chunk := pipe.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if sha256 and actual != sha256:
            raise FarmFailure(f"the blend at {source} is not the one this job's tiles were cut from "
                              f"(sha256 {actual[:12]}, tiles say {sha256[:12]}): submit the job again")
        cached = folder / f"{actual}.blend"
        os.replace(temp, cached)
        print(f"renderer: fetched blend {actual[:12]} ({cached.stat().st_size} bytes) into {folder}", flush=True)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _evict(folder, keep=cached)
    return cached, actual


def fetch_carried_files(source: Path, cache: Path) -> None:
    """Copy each ``source/<key>/`` folder of pipes the cache lacks into ``cache/<key>/`` (listing a
    folder of pipes opens none of them); mark those already there as in use."""
    if not source.is_dir():
        return
    for group in sorted(source.iterdir()):
        cached = cache / group.name
        if cached.is_dir():
            os.utime(cached)
            continue
        cache.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=cache, prefix=".", suffix=".part"))
        try:
            for path in sorted(group.rglob("*")):
                target = temp / path.relative_to(group)
                if path.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with path.open("rb") as pipe, target.open("wb") as out:
                    while chunk := pipe.read(_CHUNK):
                        out.write(chunk)
            os.replace(temp, cached)
        except OSError as error:
            shutil.rmtree(temp, ignore_errors=True)
            if not cached.is_dir():  # another process of this pod fetched it first: fine
                raise FarmFailure(f"cannot fetch the job's files {group}: {error}") from error
        shutil.rmtree(temp, ignore_errors=True)
        print(f"renderer: fetched carried files {group.name} into {cache}", flush=True)


def _evict(folder: Path, keep: Path) -> None:
    """Remove all but the ``KEEP`` most recently used copies, and parts a killed process left behind."""
    now = time.time()
    entries = []
    for path in folder.iterdir():
        try:
            used = path.stat().st_mtime
        except FileNotFoundError:  # another process evicted it
            continue
        if path.suffix == ".part":
            if now - used > IN_USE_SECONDS:
                path.unlink(missing_ok=True)
        elif path.name == "files":
            _evict_files(path, now)
        elif path.suffix == ".blend" and path != keep:
            entries.append((used, path))
    for used, path in sorted(entries, reverse=True)[KEEP:]:
        if now - used > IN_USE_SECONDS:
            path.unlink(missing_ok=True)


def _evict_files(folder: Path, now: float) -> None:
    """Carried files no blend used for a day go; each use marks its folder (``fetch_carried_files``)."""
    for path in folder.iterdir():
        try:
            used = path.stat().st_mtime
        except FileNotFoundError:
            continue
        if now - used > FILES_UNUSED_SECONDS:
            shutil.rmtree(path, ignore_errors=True)
