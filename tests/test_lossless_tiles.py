"""One bad tile costs only its frame, on the faithful farm (a pachd v2.7.0 worker's rules).

Without ``err_cmd`` a failed datum fails the renderer's job and leaves the merger's
unrunnable, and the next job re-runs it (tests/test_faithful_farm.py shows that).
The renderer's own ``err_cmd`` (``farm_pipelines/pipelines/renderer/recover.py``)
makes such a tile RECOVERED instead: the job's other frames land, the failed frame is
named with its tile, and the next job renders that tile again and only it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_scene, max_difference, render_whole

from farm_pipelines import blend_cache
from farm_pipelines.errors import FarmFailure
from farm_pipelines.job import JobSettings, TileSize
from farm_pipelines.local.farm import LocalFarm
from farm_pipelines.pipelines import load_spec
from farm_pipelines.submission import render

BAD = "000002_0001"  # frame 2, tile 1


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, dict[int, Path]]:
    folder = tmp_path_factory.mktemp("lossless")
    blend = make_scene(folder / "scene.blend", size=[64, 48], samples=8, frames=[1, 2])
    return blend, render_whole(blend, folder / "whole", [1, 2])


def _specs(record: Path, fail: str, cache: Path) -> dict[str, dict]:
    """The packaged renderer spec, err_cmd included, running tests/flaky_renderer.py (the real renderer
    with ``fail``'s tiles raising on every try)."""
    spec = load_spec("renderer")
    assert spec["transform"]["err_cmd"][1:] == ["-m", "farm_pipelines.pipelines.renderer.recover"]
    paths = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    spec["transform"] = {**spec["transform"], "cmd": [sys.executable, "-m", "flaky_renderer"],
                         "err_cmd": [sys.executable, *spec["transform"]["err_cmd"][1:]],
                         "env": {**spec["transform"]["env"], "PYTHONPATH": paths, "FLAKY_DIR": str(record),
                                 "FLAKY_FAIL_ALWAYS": fail,
                                 blend_cache.CACHE_ENV: str(cache)}}
    return {"renderer": spec}


def _run(blend: Path, out: Path, state: Path, specs: dict) -> list[Path]:
    backend = LocalFarm(state, workers=2, faithful=True, specs=specs)
    return render(blend, JobSettings(tile=TileSize(32, 24)), out, backend=backend, state_dir=state)


def test_one_bad_tile_costs_only_its_frame_and_the_next_run_is_not_poisoned(scene, tmp_path):
    blend, whole = scene
    state, record = tmp_path / "state", tmp_path / "record"
    record.mkdir()
    with pytest.raises(FarmFailure) as failure:
        _run(blend, tmp_path / "out", state, _specs(record, BAD, tmp_path / "cache"))
    message = str(failure.value)
    assert "\n" not in message and "renderer job" not in message  # the renderer's job did not fail
    assert "frame 2 tile 1" in message  # the lost tile, named with its own error line and datum ID
    assert max_difference(tmp_path / "out" / "000001.png", whole[1]) <= 1  # the good frame landed
    assert not (tmp_path / "out" / "000002.png").exists()
    logs = "".join(p.read_text() for p in (state / "logs" / "renderer").rglob("*.log"))
    [first, *_] = [json.loads(p.read_text()) for p in sorted(record.glob(f"{BAD}.*.json"))]
    datum = first["PACH_DATUM_ID"]
    assert f"(datum {datum}): " in message and "flaky" in message.lower(), message
    # err_cmd, after each try, names the tile with its datum ID (what describe() matches on a cluster)
    assert logs.count(f"/tiles/{BAD}.json (datum {datum}), frame 2 tile 1, after a failed try in job "
                      f"{first['PACH_JOB_ID']}") == 3  # datum_tries
    # The blend input is a lazy pipe: each process loads the blend once, the pipe is read only by a
    # worker whose cache had no copy yet (both may miss at once), and the copy is kept for later sets.
    processes = logs.split("faithful worker: user code started")[1:]
    rendering = [p for p in processes if " done\n" in p]  # some ran only the bad tile, or nothing
    assert len(rendering) > 2 and all(p.count("renderer: loaded blend") == 1 for p in rendering)
    assert all(p.count("renderer: loaded blend") <= 1 for p in processes)
    assert 1 <= logs.count("renderer: fetched blend") <= 2
    assert len(list((tmp_path / "cache").glob("*.blend"))) == 1

    # The next job, with the fault gone: only the recovered tile renders again, and every frame lands.
    for stale in record.glob("*.json"):
        stale.unlink()
    frames = _run(blend, tmp_path / "out2", state, _specs(record, "", tmp_path / "cache"))
    assert sorted(p.name for p in frames) == ["000001.png", "000002.png"]
    assert sorted({p.name.split(".")[0] for p in record.glob("*.json")}) == [BAD]
    for frame, reference in whole.items():
        assert max_difference(tmp_path / "out2" / f"{frame:06d}.png", reference) <= 1
