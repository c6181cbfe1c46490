"""The renderer finds a loaded blend by content, as a real Pachyderm worker needs.

pachd gives each datum fresh copies of its inputs (new inodes; v2.7.0
``src/server/worker/datum/datum.go``, ``withData`` / ``downloadData``), or with
``lazy: true`` a named pipe fetched only when opened (``src/internal/pfssync/
pipe_unix.go``, ``makePipe``), and kills the user process at the end of each datum
set. These tests use real files, real pipes and real Blender processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, make_scene

from farm_pipelines import blend_cache
from farm_pipelines.errors import FarmFailure

# Loads each path given (as `path:sha256`) in one process and prints how many blends it opened.
LOADS = (
    "import sys\nfrom pathlib import Path\nfrom farm_pipelines.blender.render_tile import TileRenderer\n"
    "renderer = TileRenderer()\n"
    "for arg in sys.argv[1:]:\n"
    "    path, sha = arg.rsplit(':', 1)\n"
    "    renderer.load(Path(path), (), sha or None)\n"
    "print('loads', renderer.loads)\n"
)


@pytest.fixture(scope="module")
def blends(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("blends")
    return (make_scene(folder / "a.blend", size=[32, 32], samples=1, frames=[1, 1]),
            make_scene(folder / "b.blend", size=[48, 32], samples=1, frames=[1, 1]))


def _loads(cache: Path, *args: str) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{blend_cache.CACHE_ENV: str(cache)})
    done = subprocess.run([sys.executable, "-c", LOADS, *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split("loads ")[-1]), done.stdout


class _Pipe:
    """A named pipe that hands out ``data`` once someone opens it, as pachd's lazy input does."""

    def __init__(self, path: Path, data: bytes) -> None:
        os.mkfifo(path)
        self.path, self.opened = path, threading.Event()
        threading.Thread(target=self._serve, args=(data,), daemon=True).start()

    def _serve(self, data: bytes) -> None:
        with self.path.open("wb") as pipe:  # blocks until a reader opens it
            self.opened.set()
            with contextlib.suppress(BrokenPipeError):
                pipe.write(data)

    def release(self) -> None:
        """Unblock the writer if nobody read the pipe (pachd's closePipes)."""
        if not self.opened.is_set():
            os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))


def test_a_fresh_copy_of_the_same_blend_is_not_loaded_again(tmp_path, blends):
    a, b = blends
    sha_a, sha_b = blend_cache.file_sha256(a), blend_cache.file_sha256(b)
    copies = []
    for index in range(3):  # each datum's own copy, as pachd downloads it: a new inode each time
        folder = tmp_path / f"datum{index}"
        folder.mkdir()
        copies.append(shutil.copy(a, folder / "scene.blend"))
    assert len({os.stat(c).st_ino for c in copies}) == 3
    loads, out = _loads(tmp_path / "cache", *(f"{c}:{sha_a}" for c in copies))
    assert loads == 1 and out.count("renderer: loaded blend") == 1
    # another blend, then the first again: each change of content loads
    loads, _ = _loads(tmp_path / "cache", f"{copies[0]}:{sha_a}", f"{b}:{sha_b}", f"{copies[1]}:{sha_a}")
    assert loads == 3
    # a tile without a recorded hash (cut by an older splitter): hashed here, still one load
    loads, _ = _loads(tmp_path / "cache", f"{copies[0]}:", f"{copies[1]}:")
    assert loads == 1


def test_a_lazy_pipe_is_read_once_per_pod_and_not_opened_when_cached(tmp_path, blends):
    a, _ = blends
    data, sha = a.read_bytes(), blend_cache.file_sha256(a)
    cache = tmp_path / "cache"
    first = [_Pipe(tmp_path / f"first{i}.blend", data) for i in range(2)]
    loads, _ = _loads(cache, *(f"{p.path}:{sha}" for p in first))
    assert loads == 1
    assert first[0].opened.is_set() and not first[1].opened.is_set()  # the second tile fetched nothing
    assert (cache / f"{sha}.blend").read_bytes() == data
    # the next datum set: a new process (the old one was killed) on the same pod finds the copy
    later = _Pipe(tmp_path / "later.blend", data)
    loads, _ = _loads(cache, f"{later.path}:{sha}")
    assert loads == 1 and not later.opened.is_set()
    for pipe in (*first, later):
        pipe.release()


def test_a_pipe_whose_blend_changed_since_the_split_is_one_clear_error(tmp_path, blends):
    a, _ = blends
    pipe = _Pipe(tmp_path / "scene.blend", a.read_bytes())
    os.environ[blend_cache.CACHE_ENV] = str(tmp_path / "cache")
    try:
        with pytest.raises(FarmFailure, match=r"not the one this job's tiles were cut from .*submit the job again"):
            blend_cache.local_blend(pipe.path, "0" * 64)
    finally:
        del os.environ[blend_cache.CACHE_ENV]
    assert not list((tmp_path / "cache").iterdir())  # no partial copy left behind


def test_old_copies_are_evicted_but_not_those_in_use(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv(blend_cache.CACHE_ENV, str(cache))
    old = time.time() - 2 * blend_cache.IN_USE_SECONDS
    for index in range(blend_cache.KEEP + 2):
        path = cache / f"{index:064x}.blend"
        path.write_bytes(b"x")
        os.utime(path, (old + index, old + index))
    recent = cache / f"{99:064x}.blend"
    recent.write_bytes(b"x")
    (cache / ".left-by-a-killed-process.part").write_bytes(b"x")
    os.utime(cache / ".left-by-a-killed-process.part", (old, old))
    source = tmp_path / "new.blend"
    source.write_bytes(b"BLENDER new")
    pipe = _Pipe(tmp_path / "pipe.blend", source.read_bytes())
    path, sha = blend_cache.local_blend(pipe.path, None)
    assert path == cache / f"{sha}.blend" and path.read_bytes() == b"BLENDER new"
    kept = sorted(p.name for p in cache.iterdir())
    # the new copy, the one in use, and the newest old ones up to KEEP in all besides the new one
    expected = {path.name, recent.name} | {f"{i:064x}.blend" for i in range(blend_cache.KEEP + 2)
                                           if i >= blend_cache.KEEP + 2 - (blend_cache.KEEP - 1)}
    assert set(kept) == expected
