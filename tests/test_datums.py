"""Pachyderm glob/join semantics on plain directories, checked against the real specs."""

from __future__ import annotations

from pathlib import Path

from farm_pipelines.datums import enumerate_datums, glob_regex
from farm_pipelines.pipelines import load_spec


def _touch(root: Path, *paths: str) -> None:
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(path)


def _repos(tmp_path: Path) -> Path:
    repos = tmp_path / "repos"
    for job in ("alpha", "beta"):
        _touch(repos, f"blends/{job}/scene/scene.blend", f"blends/{job}/job.json")
    _touch(repos, *(f"splitter/alpha/tiles/000001_{i:04d}.json" for i in range(12)))
    _touch(repos, "splitter/alpha/frames/000001/manifest.json")
    _touch(repos, *(f"splitter/beta/tiles/000007_{i:04d}.json" for i in range(3)))
    _touch(repos, "splitter/beta/frames/000007/manifest.json", "renderer/alpha/000001/0000.exr",
           "renderer/beta/000007/0000.exr")
    return repos


def test_glob_star_does_not_cross_directories():
    assert glob_regex("/*").match("/alpha") and not glob_regex("/*").match("/alpha/scene.blend")
    assert glob_regex("/(*)/tiles/*").match("/a/tiles/x.json").group(1) == "a"
    assert glob_regex("/**").match("/a/b/c")


def test_renderer_join_pairs_each_tile_with_its_own_jobs_blend_only(tmp_path):
    datums = enumerate_datums(load_spec("renderer")["input"], _repos(tmp_path))
    assert len(datums) == 15  # 12 + 3 tiles, not 15 x 2 blends as a cross would give
    for datum in datums:
        blend, tile = datum.inputs
        assert blend.name == "blends" and tile.name == "splitter"
        assert tile.path.startswith(blend.path.removesuffix("/scene") + "/tiles/")


def test_merger_gets_one_datum_per_frame_with_its_jobs_blend_and_tiles(tmp_path):
    repos = _repos(tmp_path)
    _touch(repos, "splitter/alpha/frames/000002/manifest.json", "renderer/alpha/000002/0000.exr")
    datums = enumerate_datums(load_spec("merger")["input"], repos)
    assert [[i.path for i in d.inputs] for d in datums] == [
        ["/alpha", "/alpha/frames/000001", "/alpha"], ["/alpha", "/alpha/frames/000002", "/alpha"],
        ["/beta", "/beta/frames/000007", "/beta"]]


def test_scope_limits_a_run_to_one_job(tmp_path):
    repos = _repos(tmp_path)
    assert len(enumerate_datums(load_spec("renderer")["input"], repos, scope="beta")) == 3
    assert [d.inputs[0].path for d in enumerate_datums(load_spec("splitter")["input"], repos, "alpha")] == ["/alpha"]
