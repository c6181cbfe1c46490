"""Reclaiming the local farm's disk: killed runs' work folders, ``farm clean``, the cache cap (LRU).

Real processes are killed with SIGKILL, real locks are held by other processes, and the
state is written by the farm's own store (``DatumStore.commit``/``publish``, ``FileStore``)
or by a real render; ages are set on the real files with ``os.utime``.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import FARM, ROOT, farm, make_scene

from farm_pipelines.cli import main
from farm_pipelines.file_store import FileStore
from farm_pipelines.local import cache, work_dirs
from farm_pipelines.local.store import RECORD, DatumStore

DAY = 86400.0


def _holder(code: str) -> tuple[subprocess.Popen, str]:
    """A real Python process that runs ``code``, then sleeps until killed; and the last line ``code`` printed."""
    script = textwrap.dedent(code) + "\nprint('READY', flush=True)\nimport time\ntime.sleep(600)\n"
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)))
    printed = ""
    while (line := process.stdout.readline().strip()) != "READY":
        assert line, "the holder process died"
        printed = line
    return process, printed


def _run_dir_holder(root: Path, files: int) -> tuple[subprocess.Popen, Path]:
    process, printed = _holder(f"""
        from pathlib import Path
        from farm_pipelines.local.work_dirs import new_run_dir
        run = new_run_dir(Path({str(root)!r}), "renderer")
        for i in range({files}):
            (run.path / f"tile{{i}}.exr").write_bytes(b"x" * 10000)
        print(run.path)
    """)
    return process, Path(printed)


def test_a_killed_runs_work_folder_is_removed_and_a_live_ones_kept(tmp_path):
    killed, killed_dir = _run_dir_holder(tmp_path, files=50)
    live, live_dir = _run_dir_holder(tmp_path, files=3)
    ours = work_dirs.new_run_dir(tmp_path, "merger")
    old_farm = tmp_path / "work" / "splitter-0123abcd"  # an older farm's: no lock file at all
    old_farm.mkdir()
    (old_farm / "scene.json").write_text("{}")
    _age(old_farm, 2)
    recent = tmp_path / "work" / "renderer-4567cdef"  # an older farm's, maybe running: kept for a day
    recent.mkdir()
    try:
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        assert killed_dir.is_dir() and len(list(killed_dir.iterdir())) == 51  # kill -9 leaves it behind

        removed, freed = work_dirs.remove_stale(tmp_path)

        assert removed == 2 and not killed_dir.exists() and not old_farm.exists()
        assert freed.files == 52 and freed.bytes >= 50 * 10000
        assert live_dir.is_dir() and len(list(live_dir.glob("tile*"))) == 3  # another farm, still running
        assert ours.path.is_dir() and recent.is_dir()  # this process's own; an unlocked one of today
        ours.remove()
        assert not ours.path.exists()
    finally:
        live.kill()
        live.wait()
    assert work_dirs.remove_stale(tmp_path)[0] == 1 and not live_dir.exists()  # once it has died too
    assert recent.is_dir()


def _commit(store: DatumStore, pipeline: str, ident: str, job: str, size: int, work: Path) -> None:
    out = work / ident
    (out / job).mkdir(parents=True)
    (out / job / f"{ident}.exr").write_bytes(os.urandom(size))
    store.commit(pipeline, ident, out)


def _age(path: Path, days: float) -> None:
    when = time.time() - days * DAY
    os.utime(path, (when, when))


def _state(root: Path) -> DatumStore:
    """Two jobs as the farm leaves them: ``old`` (last used 10 days ago, a carried texture) and
    ``new`` (used now), whose scene was edited once, leaving the tiles of its first version stale."""
    store = DatumStore(root, log=lambda message: None)
    store.make_room("renderer")
    work = root / "scratch"
    files = FileStore(root / "prepared" / ".files")
    texture = root / "texture.png"
    texture.write_bytes(os.urandom(300_000))
    shared = root / "shared.png"
    shared.write_bytes(os.urandom(200_000))
    for job, tiles in (("old", ["o1", "o2"]), ("new", ["n1", "n2"])):
        folder = root / "prepared" / job
        folder.mkdir(parents=True)
        (folder / "job.json").write_text("{}")
        for name, source in (("texture", texture), ("shared", shared)) if job == "old" else (("shared", shared),):
            files.link(files.put(source)[0], folder / "files" / f"{name}.png")
        for tile in tiles:
            _commit(store, "renderer", tile, job, 1_000_000, work)
        store.publish("renderer", job, tiles)
        (root / "logs" / "renderer" / job).mkdir(parents=True)
        (root / "logs" / "renderer" / job / "run-0.log").write_text("log\n")
    for stale, days in (("s1", 5), ("s2", 2)):  # ``new``'s first version: no repo shows them now
        _commit(store, "renderer", stale, "new", 1_000_000, work)
        _age(store.datum_dir("renderer", stale) / RECORD, days)
    for path in [*(root / "repos" / "renderer" / "old").rglob("*"), root / "repos" / "renderer" / "old",
                 root / "prepared" / "old" / "job.json", *(root / "datums" / "renderer").glob(f"o*/{RECORD}")]:
        _age(path, 10)
    return store


def _datums(root: Path) -> set[str]:
    return {p.name for p in (root / "datums" / "renderer").iterdir()}


def test_the_cap_evicts_least_recently_used_first_and_keeps_the_running_job(tmp_path):
    store = _state(tmp_path)
    total = cache.take_inventory(tmp_path).total_bytes

    first = cache.enforce_limit(tmp_path, keep_job="new", limit=total - 1)  # frees the oldest: job ``old``

    assert first.jobs == ["old"] and first.datums == 0 and _datums(tmp_path) == {"n1", "n2", "s1", "s2"}
    assert not (tmp_path / "prepared" / "old").exists() and not (tmp_path / "repos" / "renderer" / "old").exists()
    assert not (tmp_path / "logs" / "renderer" / "old").exists()
    stored = {p.name for p in (tmp_path / "prepared" / ".files").iterdir()}
    assert len(stored) == 1 and first.store_files == 1  # the texture only ``old`` used; ``shared`` stays
    assert first.freed.bytes >= 2_000_000 + 300_000
    assert store.is_done("renderer", "s1")  # reused now (a run went back to that version): the newest stale one
    second = cache.enforce_limit(tmp_path, keep_job="new", limit=total - 2_400_000)

    assert second.datums == 1 and second.jobs == [] and _datums(tmp_path) == {"n1", "n2", "s1"}

    everything = cache.enforce_limit(tmp_path, keep_job="new", limit=0)

    assert _datums(tmp_path) == {"n1", "n2"} and everything.jobs == []  # the running job, whole
    assert all(store.is_done("renderer", tile) for tile in ("n1", "n2"))
    assert (tmp_path / "prepared" / "new" / "files" / "shared.png").read_bytes() == (tmp_path / "shared.png"
                                                                                      ).read_bytes()
    assert cache.take_inventory(tmp_path).total_bytes <= total - 4_000_000


def test_older_than_removes_only_what_was_unused_that_long(tmp_path):
    _state(tmp_path)
    cleaned = cache.clean(tmp_path, older_than_days=3)
    assert cleaned.jobs == ["old"] and cleaned.datums == 1
    assert _datums(tmp_path) == {"n1", "n2", "s2"}


def test_a_job_a_render_holds_is_skipped_and_named(tmp_path):
    _state(tmp_path)
    holder, _ = _holder(f"""
        from pathlib import Path
        from farm_pipelines.job_lock import job_lock
        held = job_lock(Path({str(tmp_path)!r}), "new", print)
        held.__enter__()
    """)
    try:
        cleaned = cache.clean(tmp_path, everything=True)
    finally:
        holder.kill()
        holder.wait()
    assert cleaned.jobs == ["old"] and cleaned.skipped == ["new"]
    assert _datums(tmp_path) == {"n1", "n2", "s1", "s2"}  # its stale datums too: a run may reuse them now
    assert any("skipped job new: a render of it is running" in line for line in cleaned.lines())


def test_the_cli_cleans_a_job_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    _state(tmp_path)
    assert main(["clean", "--list", "--state-dir", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    assert re.search(r"^old\tlast used .*\n^new\tlast used ", listed, re.M), listed

    holder, _ = _holder(f"""
        from pathlib import Path
        from farm_pipelines.job_lock import job_lock
        held = job_lock(Path({str(tmp_path)!r}), "new", print)
        held.__enter__()
    """)
    try:  # another process renders ``new``: the CLI must leave it alone
        busy = farm("clean", "--job", "new", state=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert busy.returncode == 1 and "skipped job new: a render of it is running" in busy.stdout, busy
    assert _datums(tmp_path) == {"o1", "o2", "n1", "n2", "s1", "s2"}

    done = farm("clean", "--job", "new", state=tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.match(r"freed \d+\.\d MB in \d+ file\(s\): 1 job\(s\) \(new\), 2 stored datum", done.stdout)
    assert _datums(tmp_path) == {"o1", "o2"} and not (tmp_path / "prepared" / "new").exists()

    for args, message in ((["--job", "nope"], "no job named 'nope'"), (["--older-than", "-1"], "number of days"),
                          (["--limit", "lots"], "not a size"), ([], "say what to clean"),
                          (["somejob", "--all"], "take no JOB")):
        assert main(["clean", *args, "--state-dir", str(tmp_path)]) == 2, args
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, (args, error)


@pytest.mark.parametrize(("text", "size"), [("20G", 20 * 10**9), ("500m", 500 * 10**6), ("1.5T", 1.5e12),
                                            ("0", 0), ("none", None)])
def test_cache_sizes(text, size, tmp_path):
    assert cache.parse_size(text) == size
    assert cache.cache_limit(tmp_path, {"FARM_CACHE_LIMIT": text}) == size


def test_a_cleaned_render_renders_again_and_the_cap_keeps_only_the_current_tiles(tmp_path, state):
    """Real renders: an edited job leaves stale tiles, the cap drops them, the next run reuses the rest."""
    blend = make_scene(tmp_path / "scene.blend", size=[48, 32], samples=2, frames=[1, 1])
    args = ["render", blend, "--workers", "1", "--out", tmp_path / "out"]
    assert farm(*args, "--tile", "24", state=state).returncode == 0
    assert (edited := farm(*args, "--tile", "16", state=state)).returncode == 0, edited.stderr  # 6 tiles, not 4
    job = next((state / "prepared").glob("scene-*")).name
    before = cache.take_inventory(state)
    assert {u.job for u in before.stale_datums} == {job} and len(before.stale_datums) >= 4

    cleaned = cache.enforce_limit(state, keep_job=job, limit=0)

    assert cleaned.datums == len(before.stale_datums) and cleaned.jobs == []
    again = farm(*args, "--tile", "16", state=state)
    assert again.returncode == 0 and "renderer:" not in again.stderr, again.stderr  # every tile reused
    wiped = subprocess.run([*FARM, "clean", "--all", "--state-dir", str(state)], capture_output=True, text=True,
                           cwd=ROOT)
    assert wiped.returncode == 0 and f"1 job(s) ({job})" in wiped.stdout, wiped.stdout
    assert not any((state / "datums" / "renderer").iterdir()) and not any((state / "prepared" / ".files").glob("*"))
    # The farm renders from nothing again, and a clean meanwhile leaves the running render alone.
    rendering = subprocess.Popen([*FARM, *map(str, args), "--tile", "16"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                 env=dict(os.environ, FARM_STATE_DIR=str(state)))
    lock = state / "locks" / f"{job}.lock"
    while rendering.poll() is None and not _held(lock):
        time.sleep(0.02)
    meanwhile = cache.clean(state, everything=True)
    _, stderr = rendering.communicate(timeout=600)
    assert meanwhile.skipped == [job] and meanwhile.jobs == [], meanwhile
    assert rendering.returncode == 0 and len(list((tmp_path / "out").iterdir())) == 1, stderr


def _held(lock: Path) -> bool:
    """Whether another process holds ``lock`` (``job_lock``'s file): try it without waiting."""
    try:
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False


def test_a_carried_file_pruned_between_put_and_link_is_stored_again(tmp_path):
    """A clean during a prepare: the store's copy, not yet linked (link count 1), is pruned meanwhile."""
    source = tmp_path / "wood.png"
    source.write_bytes(os.urandom(5000))
    files = FileStore(tmp_path / "prepared" / ".files")
    sha256, _ = files.put(source)
    assert cache.clean(tmp_path, everything=True).store_files == 1 and not files.has(sha256)

    files.link(sha256, tmp_path / "prepared" / "job" / "files" / "wood.png")

    assert (tmp_path / "prepared" / "job" / "files" / "wood.png").read_bytes() == source.read_bytes()
    assert files.has(sha256) and (tmp_path / "prepared" / ".files" / sha256).stat().st_nlink == 2
