"""The faithful local farm: Pachyderm v2.7.0's worker rules, with real Blender processes and real files.

The rules under test and their sources are in ``farm_pipelines/local/faithful.py``,
``pachd_rules.py`` and ``datum_data.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest
from conftest import ROOT, farm, make_scene, max_difference, render_whole

from farm_pipelines.datums import Datum, DatumInput, enumerate_datums
from farm_pipelines.errors import FarmFailure
from farm_pipelines.events import FrameDone
from farm_pipelines.job import FrameRange, JobSettings, TileSize
from farm_pipelines.local.datum_data import datum_data
from farm_pipelines.local.farm import LocalFarm
from farm_pipelines.local.pachd_rules import cut_sets, hash_datum, new_id, pachd_datum_id, set_spec
from farm_pipelines.pipelines import load_spec
from farm_pipelines.submission import render

HEX32, HEX64 = re.compile(r"^[0-9a-f]{32}$"), re.compile(r"^[0-9a-f]{64}$")


# -- pure rules, on real files ----------------------------------------------------------------------


def _expected_datum_id(parts: list[tuple[str, str, str]]) -> str:
    """common.go DatumID, written out again: name, repo, branch, path, each with a big-endian int64 length."""
    digest = hashlib.blake2b(digest_size=32)
    for name, repo, path in sorted(parts):
        for part in (name, repo, "master", path):
            digest.update(part.encode() + len(part.encode()).to_bytes(8, "big"))
    return digest.hexdigest()


def test_datum_id_hashes_paths_not_contents_and_skip_hash_hashes_contents(tmp_path):
    (tmp_path / "blends" / "job" / "scene").mkdir(parents=True)
    (tmp_path / "blends" / "job" / "scene" / "scene.blend").write_bytes(b"one")
    (tmp_path / "splitter" / "job" / "tiles").mkdir(parents=True)
    (tmp_path / "splitter" / "job" / "tiles" / "000001_0000.json").write_text("{}")
    [datum] = enumerate_datums(load_spec("renderer")["input"], tmp_path, "job")
    ident = pachd_datum_id(datum, tmp_path)
    assert ident == _expected_datum_id([("blends", "blends", "/job/scene/"),
                                        ("splitter", "splitter", "/job/tiles/000001_0000.json")])
    def content(item: DatumInput) -> str:
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(item.source(tmp_path).rglob("*"))
                                       if p.is_file()) if item.source(tmp_path).is_dir()
                              else item.source(tmp_path).read_bytes()).hexdigest()
    before = hash_datum("salt", datum, tmp_path, content)
    (tmp_path / "blends" / "job" / "scene" / "scene.blend").write_bytes(b"two")
    assert pachd_datum_id(datum, tmp_path) == ident  # paths only
    assert hash_datum("salt", datum, tmp_path, content) != before  # contents and salt
    assert hash_datum("other", datum, tmp_path, content) != hash_datum("salt", datum, tmp_path, content)
    assert HEX64.match(ident) and HEX32.match(new_id()) and new_id() != new_id()


def test_set_sizes_follow_create_set_spec():
    spec = {"pipeline": {"name": "p"}}
    assert set_spec(spec, 120, 2) == (15, 0)  # no datum_set_spec: 120 / (2 workers * 4)
    assert set_spec(spec, 5, 2) == (1, 0)  # at least 1
    assert set_spec({**spec, "datum_set_spec": {"per_worker": 2}}, 120, 2) == (30, 0)
    assert set_spec({**spec, "datum_set_spec": {"number": 7}}, 120, 2) == (7, 0)
    assert set_spec({**spec, "datum_set_spec": {"size_bytes": 100}}, 120, 2) == (0, 100)
    with pytest.raises(FarmFailure, match="datum_set_spec has no number"):
        set_spec({**spec, "datum_set_spec": {}}, 120, 2)
    assert [len(s) for s in cut_sets(list(range(10)), [1] * 10, 4, 0)] == [4, 4, 2]
    # size_bytes: a new set once the bytes so far reach the limit, checked before adding the next datum
    assert cut_sets(list(range(5)), [60, 50, 10, 100, 1], 0, 100) == [[0, 1], [2, 3], [4]]


def test_glob_star_matches_dotfiles_and_outer_join_keeps_only_outer_inputs(tmp_path):
    for repo, names in {"a": ["1", "2", ".3"], "b": ["1", "4"]}.items():
        for name in names:
            (tmp_path / repo).mkdir(exist_ok=True)
            (tmp_path / repo / name).write_text(name)
    assert [d.inputs[0].path for d in enumerate_datums({"pfs": {"repo": "a", "glob": "/*"}}, tmp_path)] == \
        ["/.3", "/1", "/2"]

    def join(outer_a: bool, outer_b: bool) -> list[list[str]]:
        spec = {"join": [{"pfs": {"repo": "a", "glob": "/(*)", "join_on": "$1", "outer_join": outer_a}},
                         {"pfs": {"repo": "b", "glob": "/(*)", "join_on": "$1", "outer_join": outer_b}}]}
        return [[f"{i.repo}{i.path}" for i in d.inputs] for d in enumerate_datums(spec, tmp_path)]
    assert join(False, False) == [["a/1", "b/1"]]
    assert join(True, False) == [["a/.3"], ["a/1", "b/1"], ["a/2"]]
    assert join(True, True) == [["a/.3"], ["a/1", "b/1"], ["a/2"], ["b/4"]]


def test_each_attempt_gets_fresh_copies_symlinked_into_pfs_and_lazy_inputs_are_pipes(tmp_path):
    repos, pfs = tmp_path / "repos", tmp_path / "pfs"
    (repos / "blends" / "job").mkdir(parents=True)
    (repos / "blends" / "job" / "scene.blend").write_bytes(b"blend" * 1000)
    (repos / "blends" / "job" / "job.json").write_text("{}")
    (repos / "splitter" / "job").mkdir(parents=True)
    (repos / "splitter" / "job" / "t.json").write_text('{"tile": 1}')
    pfs.mkdir()
    datum = Datum((DatumInput("blends", "blends", "/job", "job"), DatumInput("splitter", "splitter", "/job/t.json")))
    source = (repos / "splitter" / "job" / "t.json").stat().st_ino
    for _attempt in range(2):
        with datum_data(pfs, tmp_path / "set", "d" * 64, datum, repos, set(), {"A": "1"}) as folder:
            tile = pfs / "splitter" / "job" / "t.json"
            assert (pfs / "splitter").is_symlink() and (pfs / "out").is_symlink() and (pfs / ".env").is_symlink()
            assert os.readlink(pfs / "splitter") == str(folder / "splitter")
            assert tile.read_text() == '{"tile": 1}' and tile.stat().st_nlink == 1
            assert tile.stat().st_ino != source
            tile.write_text("changed by the transform")  # a copy: the repo and the next attempt never see it
            assert (pfs / ".env").read_text() == "A=1\n"
        assert not folder.exists()  # removed when the attempt ends
    with datum_data(pfs, tmp_path / "set", "e" * 64, datum, repos, {"blends"}, {}):
        blend = pfs / "blends" / "job" / "scene.blend"
        assert stat.S_ISFIFO(blend.lstat().st_mode)
        assert stat.S_ISFIFO((pfs / "blends" / "job" / "job.json").lstat().st_mode)
        assert blend.read_bytes() == b"blend" * 1000  # streamed once opened; job.json is never opened
    assert not (tmp_path / "set" / "pfs" / ("e" * 64)).exists()


# -- the three pipelines on the faithful farm -------------------------------------------------------


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, dict[int, Path]]:
    folder = tmp_path_factory.mktemp("faithful")
    blend = make_scene(folder / "scene.blend", size=[64, 48], samples=8, frames=[1, 2])
    return blend, render_whole(blend, folder / "whole", [1, 2])


def _sets_in_logs(state: Path) -> list[tuple[int, int]]:
    """(set size, tiles the process rendered) for every renderer process the worker logs show."""
    found = []
    for log in sorted((state / "logs" / "renderer").rglob("*.log")):
        for part in log.read_text(encoding="utf-8").split("faithful worker: user code started")[1:]:
            size = re.match(r" \(pid \d+\) for a datum set of (\d+)", part)
            found.append((int(size.group(1)) if size else -1, part.count(" done\n")))
    return found


def test_the_three_pipelines_give_the_same_frames_on_both_farms_with_one_process_per_datum_set(
        scene, tmp_path, monkeypatch):
    blend, whole = scene
    everyday = farm("render", blend, "--tile", "16", "--workers", 2, "--out", tmp_path / "everyday",
                    state=tmp_path / "s1")
    assert everyday.returncode == 0, everyday.stderr
    monkeypatch.setenv("FARM_FAITHFUL", "1")
    faithful = farm("render", blend, "--tile", "16", "--workers", 2, "--out", tmp_path / "faithful",
                    state=tmp_path / "s2")
    assert faithful.returncode == 0, faithful.stderr
    for frame, reference in whole.items():
        name = f"{frame:06d}.png"
        assert max_difference(tmp_path / "faithful" / name, tmp_path / "everyday" / name) == 0
        assert max_difference(tmp_path / "faithful" / name, reference) <= 1
    sets = _sets_in_logs(tmp_path / "s2")
    # 2 frames x 12 tiles of 16 px = 24 datums; no datum_set_spec number: 24 / (2 workers x 4) = 3 per set
    assert sorted(sets) == [(3, 3)] * 8, sets  # one process per set, and it rendered exactly its set


def _flaky_specs(**env: str) -> dict[str, dict]:
    spec = load_spec("renderer")
    spec["transform"] = {**spec["transform"], "cmd": [sys.executable, "-m", "flaky_renderer"],
                         "env": {**spec["transform"]["env"], **env,
                                 "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}}
    return {"renderer": spec}


def _records(folder: Path, tile: str) -> list[dict]:
    return [json.loads((folder / f"{tile}.{i}.json").read_text()) for i in
            range(len(list(folder.glob(f"{tile}.*.json"))))]


def _render(blend: Path, out: Path, state: Path, specs: dict) -> list[Path]:
    backend = LocalFarm(state, workers=2, faithful=True, specs=specs)
    return render(blend, JobSettings(tile=TileSize(32, 24)), out, backend=backend, state_dir=state)


def test_a_tile_failing_once_is_retried_at_once_on_the_same_worker_in_a_restarted_process(scene, tmp_path):
    blend, whole = scene
    record = tmp_path / "record"
    record.mkdir()
    _render(blend, tmp_path / "out", tmp_path / "state", _flaky_specs(FLAKY_DIR=str(record),
                                                                       FLAKY_FAIL_ONCE="000001_0002"))
    first, second = _records(record, "000001_0002")
    assert first["pfs"] == second["pfs"] and first["pid"] != second["pid"]  # same worker, new process
    assert first["PACH_DATUM_ID"] == second["PACH_DATUM_ID"] and HEX64.match(first["PACH_DATUM_ID"])
    assert first["links"] == second["links"] == 1  # copies, not links
    assert first["PACH_JOB_ID"] == first["PACH_OUTPUT_COMMIT_ID"] == first["splitter_COMMIT"]
    assert HEX32.match(first["PACH_JOB_ID"])
    tiles = sorted(p.name.split(".")[0] for p in record.glob("*.json"))
    # laid out as <set>/pfs/<datum id>/splitter/<path in repo>; the ID hashes those paths
    in_repo = first["resolved"].split(f"/pfs/{first['PACH_DATUM_ID']}/splitter")[1]
    expected = _expected_datum_id([("blends", "blends", f"/{in_repo.split('/')[1]}/scene/"),
                                   ("splitter", "splitter", in_repo)])
    assert first["PACH_DATUM_ID"] == expected
    source = tmp_path / "state" / "repos" / "splitter" / in_repo.lstrip("/")
    assert first["inode"] != source.stat().st_ino and second["inode"] != source.stat().st_ino
    assert len(tiles) == len(set(tiles)) + 1  # only the flaky tile ran twice
    for frame, reference in whole.items():
        assert max_difference(tmp_path / "out" / f"{frame:06d}.png", reference) <= 1


def test_a_tile_failing_for_good_fails_the_job_and_the_merger_never_runs(scene, tmp_path):
    blend, _ = scene
    record = tmp_path / "record"
    record.mkdir()
    specs = _flaky_specs(FLAKY_DIR=str(record), FLAKY_FAIL_ALWAYS="000002_0001")
    specs["renderer"]["transform"].pop("err_cmd", None)
    with pytest.raises(FarmFailure) as failure:
        _render(blend, tmp_path / "out", tmp_path / "state", specs)
    message = str(failure.value)
    [attempt, *_] = _records(record, "000002_0001")
    assert "\n" not in message and attempt["PACH_DATUM_ID"] in message
    assert message.startswith(f"renderer job {attempt['PACH_JOB_ID']} failed: 1 datum(s) failed")
    assert "merger job(s) are unrunnable" in message
    assert len(_records(record, "000002_0001")) == 3  # datum_tries
    assert not (tmp_path / "state" / "logs" / "merger").exists()  # no merger worker ever started
    assert not list((tmp_path / "out").glob("*.png"))


def test_with_err_cmd_a_tile_failing_for_good_is_recovered_and_the_job_goes_on(scene, tmp_path):
    blend, _ = scene
    record = tmp_path / "record"
    record.mkdir()
    state = tmp_path / "state"
    specs = _flaky_specs(FLAKY_DIR=str(record), FLAKY_FAIL_ALWAYS="000002_0001")
    specs["renderer"]["transform"]["err_cmd"] = [  # exit 0 recovers; it runs with the datum's environment
        sys.executable, "-c", "import os; print('recovering', os.environ['PACH_DATUM_ID'], flush=True)"]
    try:
        _render(blend, tmp_path / "out", state, specs)
    except FarmFailure as failure:  # the merger may name the frame whose tile never landed
        assert "renderer job" not in str(failure)
    assert (state / "logs" / "merger").exists()  # the merger's job ran
    assert not list((state / "repos" / "renderer").glob("*/000002/0001.exr"))  # not uploaded
    assert list((state / "repos" / "renderer").glob("*/000002/0000.exr"))
    logs = "".join(p.read_text() for p in (state / "logs" / "renderer").rglob("*.log"))
    [attempt, *_] = _records(record, "000002_0001")
    assert logs.count(f"recovering {attempt['PACH_DATUM_ID']}") == 3  # after each of datum_tries attempts
    assert "the datum is RECOVERED" in logs
    # RECOVERED is not skippable: the next job runs that tile again, and only it
    for stale in record.glob("*.json"):
        stale.unlink()
    try:
        _render(blend, tmp_path / "out2", state, specs)
    except FarmFailure:
        pass
    assert sorted({p.name.split(".")[0] for p in record.glob("*.json")}) == ["000002_0001"]


def test_frames_land_per_part_each_part_its_own_commit_set(tmp_path):
    """As on Pachyderm, where a job's frames are readable only once its merger job is done: 3 frames of
    4 tiles with one worker (sets of two tiles need 8: the grid's cells of 2 frames) go as two commit sets,
    and the first part's frames are delivered before the second part's commit set starts."""
    blend = make_scene(tmp_path / "scene.blend", size=[64, 48], samples=4, frames=[1, 3])
    happened: list[str] = []

    def on_event(event: object) -> None:
        if isinstance(event, FrameDone):
            happened.append(f"frame {event.frame}")

    def on_log(message: str) -> None:
        if "(commit set of " in message:
            happened.append(message.split("(commit set of ")[1].rstrip(")").rsplit(".", 1)[-1])

    backend = LocalFarm(tmp_path / "state", workers=1, faithful=True, log=on_log)
    frames = render(blend, JobSettings(tile=TileSize(32, 24)), tmp_path / "out", backend=backend,
                    on_event=on_event, state_dir=tmp_path / "state")

    assert happened == ["p0", "frame 1", "frame 2", "p1", "frame 3"], happened
    reference = render_whole(blend, tmp_path / "whole", [1, 2, 3])
    assert [p.name for p in frames] == ["000001.png", "000002.png", "000003.png"]
    for frame, path in reference.items():
        assert max_difference(tmp_path / "out" / f"{frame:06d}.png", path) <= 1


def test_another_range_renders_no_tile_again_since_a_frame_keeps_its_part(tmp_path):
    """Parts are cells of a grid from the scene's first frame, so frames 2-3 after 1-3 are in the parts
    they were in: pachd's datum paths are the same, and their tiles are skipped as processed."""
    blend = make_scene(tmp_path / "scene.blend", size=[64, 48], samples=4, frames=[1, 3])
    state = tmp_path / "state"
    said: dict[str, list[str]] = {"all": [], "some": []}
    for frames, out in ((FrameRange(), "all"), (FrameRange(2, 3), "some")):
        backend = LocalFarm(state, workers=1, faithful=True, log=said[out].append)
        render(blend, JobSettings(tile=TileSize(32, 24), frames=frames), tmp_path / out, backend=backend,
               state_dir=state)
    rendered = [[line for line in said[out] if line.startswith("renderer:")] for out in ("all", "some")]
    assert len(rendered[0]) == 2 and rendered[1] == [], said  # each part's tiles once, then none again
    assert sorted(p.name for p in (tmp_path / "some").iterdir()) == ["000002.png", "000003.png"]
    for name in ("000002.png", "000003.png"):
        assert max_difference(tmp_path / "some" / name, tmp_path / "all" / name) == 0
