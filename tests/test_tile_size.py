"""``--tile auto``: the farm model chooses a size close to ideal, and the CLI uses it end to end."""

from __future__ import annotations

import json

import pytest
from conftest import farm, make_scene, max_difference, render_whole

from farm_pipelines import tile_size
from farm_pipelines.errors import BadInput
from farm_pipelines.job import JobSettings, TileSize, parse_tile
from farm_pipelines.tile_size import FARM_SHAPES, Costs, Shot, choose, ideal, makespan
from farm_pipelines.tiles import Box

HD = Shot((1920, 1080), Box(0, 0, 1920, 1080), frames=24)
HD_SHORT = Shot((1920, 1080), Box(0, 0, 1920, 1080), frames=6)
SMALL = Shot((1280, 720), Box(0, 0, 1280, 720), frames=4)


def ratio(shot: Shot, tile: TileSize, speeds: tuple[float, ...], costs: Costs) -> float:
    return makespan(shot, tile, speeds, costs) / ideal(shot, speeds, costs)


@pytest.mark.parametrize("shot", [HD, HD_SHORT], ids=["1080p x 24", "1080p x 6"])
@pytest.mark.parametrize("scale", [1, 4], ids=["measured overhead", "4x overhead"])
@pytest.mark.parametrize("name", list(FARM_SHAPES))
def test_chosen_size_is_within_ten_percent_of_ideal(name, scale, shot):
    speeds = FARM_SHAPES[name]
    costs = Costs(overhead_s=scale * tile_size.DEFAULT_OVERHEAD_S)
    assert ratio(shot, choose(shot, speeds, costs), speeds, costs) <= 1.10


def test_short_jobs_on_very_unequal_farms_miss_the_goal():
    """Known limit of free-worker-takes-next: the slowest worker's last tile is the tail (see README)."""
    speeds = FARM_SHAPES["mixed + GPU 8"]
    assert ratio(SMALL, choose(SMALL, speeds, Costs(overhead_s=0.2)), speeds, Costs(overhead_s=0.2)) > 1.10


def test_whole_frames_are_far_from_ideal_on_unequal_farms():
    costs = Costs()
    for name in ("mixed + GPU 8", "GPU 8 + 1 CPU"):
        speeds = FARM_SHAPES[name]
        assert ratio(HD, TileSize(), speeds, costs) >= 1.10
        assert ratio(HD, choose(HD, speeds, costs), speeds, costs) <= 1.05


def test_one_worker_pays_every_tile_overhead():
    """With one worker nothing balances: the makespan is tiles x overhead + pixels x cost, exactly."""
    costs = Costs(overhead_s=0.1, pixel_s=1e-5)
    shot = Shot((100, 60), Box(0, 0, 100, 60), frames=3)
    previous = float("inf")
    for edge in (8, 16, 32, 64):
        tiles = -(-100 // edge) * -(-60 // edge)
        expected = 3 * (tiles * 0.1 + 6000 * 1e-5)
        assert makespan(shot, TileSize(edge, edge), [1.0], costs) == pytest.approx(expected)
        assert expected < previous
        previous = expected
    assert choose(shot, [1.0], costs) == TileSize()


def test_free_worker_takes_the_next_tile():
    """Three 1 s tiles, workers of speed 1 and 0.5: the fast one takes the third tile and ends at 2 s."""
    shot = Shot((48, 16), Box(0, 0, 48, 16), frames=1)
    assert makespan(shot, TileSize(16, 16), [1.0, 0.5], Costs(0.0, 1 / 256)) == pytest.approx(2.0)
    assert makespan(shot, TileSize(16, 16), [0.5, 1.0], Costs(0.0, 1 / 256)) == pytest.approx(2.0)
    assert makespan(shot, TileSize(), [0.5, 1.0], Costs(0.0, 1 / 256)) == pytest.approx(6.0)


@pytest.mark.parametrize("name", list(FARM_SHAPES))
def test_more_overhead_costs_more_and_moves_the_choice_to_larger_tiles(name):
    """Exact monotonicity holds per tile size; the choice itself only trends (candidates are discrete)."""
    speeds = FARM_SHAPES[name]
    overheads = (0.0, 0.01, 0.05, 0.2, 1.0)
    for tile in (TileSize(32, 32), TileSize(256, 256), TileSize()):
        spans = [makespan(SMALL, tile, speeds, Costs(overhead_s=o)) for o in overheads]
        assert spans == sorted(spans) and spans[0] < spans[-1]
        assert spans[0] >= ideal(SMALL, speeds, Costs()) * (1 - 1e-9)
    one_frame = Shot(SMALL.frame_size, SMALL.region, frames=1)  # whole frames cannot balance one frame
    edges = [choose(one_frame, speeds, Costs(overhead_s=o)).width or 10**9 for o in (0.001, 2.0)]
    assert edges[0] < edges[1]


def test_sample_chunks_and_overscan_add_work():
    shot = Shot((256, 128), Box(0, 0, 256, 128), frames=1)
    assert sum(shot.datum_pixels(TileSize(64, 64))) == 256 * 128
    chunked = Shot((256, 128), Box(0, 0, 256, 128), frames=1, chunks=4)
    assert len(chunked.datum_pixels(TileSize(64, 64))) == 4 * 8
    assert sum(chunked.datum_pixels(TileSize(64, 64))) == 256 * 128
    grown = Shot((256, 128), Box(0, 0, 256, 128), frames=1, overscan=8)
    assert sum(grown.datum_pixels(TileSize(64, 64))) > 256 * 128
    assert grown.datum_pixels(TileSize()) == [256 * 128]


def test_long_jobs_simulate_only_their_last_frames(monkeypatch):
    shot = Shot((640, 360), Box(0, 0, 640, 360), frames=40)
    speeds = FARM_SHAPES["mixed + GPU 8"]
    exact = makespan(shot, TileSize(32, 32), speeds, Costs())
    monkeypatch.setattr(tile_size, "MAX_SIMULATED_TILES", 1000)
    assert makespan(shot, TileSize(32, 32), speeds, Costs()) == pytest.approx(exact, rel=0.01)


def test_costs_from_the_environment(monkeypatch):
    monkeypatch.setenv("FARM_TILE_OVERHEAD_S", "0.5")
    assert Costs.from_env() == Costs(0.5, tile_size.DEFAULT_PIXEL_S)
    monkeypatch.setenv("FARM_TILE_OVERHEAD_S", "fast")
    with pytest.raises(BadInput, match="FARM_TILE_OVERHEAD_S"):
        Costs.from_env()


def test_auto_parses_and_survives_job_json():
    tile = parse_tile("Auto")
    assert tile.auto and not tile.whole_frame and str(tile) == "auto"
    settings = JobSettings(tile=tile)
    assert JobSettings.from_json(json.loads(json.dumps(settings.to_json()))).tile == tile


def test_cli_tile_auto_renders_and_reports_the_size(tmp_path, state):
    blend = make_scene(tmp_path / "scene.blend", size=[96, 64], samples=16, frames=[1, 2])
    reference = render_whole(blend, tmp_path / "whole", [1])

    done = farm("render", blend, "--tile", "auto", "--frames", "1", "--workers", "2", "--out", tmp_path / "out",
                state=state)

    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stderr.splitlines() if line.startswith("tile size auto:"))
    assert "1 frame(s) of 96x64 on 2 worker(s)" in line
    job = json.loads(next((state / "prepared").glob("*/job.json")).read_text())
    chosen = TileSize(**job["settings"]["tile"])
    assert not chosen.auto and f"auto: {chosen} " in line
    assert not chosen.whole_frame, "one frame on two workers should be split"
    assert max_difference(tmp_path / "out" / "000001.png", reference[1]) <= 1


def test_a_cluster_pays_more_per_tile_so_auto_picks_larger_tiles_there():
    """Pachyderm's per-datum cost (fresh input copies, pachd's own work) is ten times the local
    farm's; the same shot on the same workers must get tiles at least as large, larger here."""
    shot = Shot((1920, 1080), Box(0, 0, 1920, 1080), 6)
    speeds = FARM_SHAPES["8 equal"]
    local, cluster = Costs.from_env(), Costs.from_env(cluster=True)
    assert cluster.overhead_s == tile_size.CLUSTER_OVERHEAD_S > local.overhead_s
    local_tile, cluster_tile = choose(shot, speeds, local), choose(shot, speeds, cluster)
    edge = {tile: tile.width or 10**9 for tile in (local_tile, cluster_tile)}
    assert edge[cluster_tile] > edge[local_tile], (local_tile, cluster_tile)
    assert ratio(shot, cluster_tile, speeds, cluster) <= 1.10  # still within the goal on its own costs
