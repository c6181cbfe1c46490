"""How tile size plays against unequal workers: measure what a tile costs, then simulate farms.

    .venv/bin/python bench/heterogeneous.py [--size 320x180] [--samples 64] [--threads 1]
        [--sizes 16,32,64,128] [--rounds 2] [--job 1920x1080x24 --job 320x180x3]
    .venv/bin/python bench/heterogeneous.py --overhead 0.010 --pixel 1.33e-4   # simulate only

Measuring: the demo scene's frame is rendered completely at each tile size, in this one
Blender process, by the farm's own ``TileRenderer`` (border + crop, persistent data,
float EXR out). Every pass renders the same pixels, so ``seconds = tiles * overhead +
pixels * pixel cost`` fits per-tile overhead and per-pixel cost by least squares.
One thread by default: a local-farm worker on this 2-core machine gets one.
Then the same frame goes through the local farm with one worker at each tile size;
the slope of those runs is the per-tile overhead the farm really pays (the datum
hand-off included), and it is the overhead the simulation uses.

Simulating: ``farm_pipelines.tile_size`` (what ``--tile auto`` uses) runs each farm
shape at every tile size and prints makespan / ideal, then the size it would choose.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farm_pipelines.job import TileSize  # noqa: E402
from farm_pipelines.manifest import TileSpec  # noqa: E402
from farm_pipelines.tile_size import FARM_SHAPES, Costs, Shot, choose, ideal, makespan  # noqa: E402
from farm_pipelines.tiles import Box, split  # noqa: E402

SIMULATED_TILES = (16, 32, 64, 128, 256, 512)


def measure(blend: Path, size: tuple[int, int], threads: int, edges: list[int], rounds: int) -> Costs:
    """Render the demo frame whole and at each tile edge in this process; fit overhead and per-pixel cost."""
    from farm_pipelines.blender.render_tile import TileRenderer  # bpy: only when measuring

    frame = Box(0, 0, *size)
    renderer = TileRenderer(threads=threads)
    out = blend.with_name("tile.exr")
    with _quiet():
        renderer.load(blend)
        renderer.render(1, TileSpec(0, frame, frame), size, out)  # warm up: BVH, kernels

    def one_pass(edge: int | None) -> tuple[int, float]:
        boxes = [frame] if edge is None else split(frame, edge, edge)
        start = time.perf_counter()
        with _quiet():
            for index, box in enumerate(boxes):
                renderer.render(1, TileSpec(index, box, box), size, out)
        return len(boxes), time.perf_counter() - start

    slope, intercept = _fit(_best_of(rounds, [*edges, None], one_pass))
    return Costs(overhead_s=slope, pixel_s=intercept / (size[0] * size[1]))


def measure_farm(blend: Path, edges: list[int], rounds: int) -> float:
    """Per-tile overhead through the local farm: one worker, one frame, a fresh state per run."""

    def one_run(edge: int | None) -> tuple[int, float]:
        tile = ["--whole-frame"] if edge is None else ["--tile", str(edge)]
        state = Path(tempfile.mkdtemp(prefix=f"state-{edge}-", dir=blend.parent))
        env = dict(os.environ, FARM_STATE_DIR=str(state))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "farm_pipelines.cli", "render", str(blend), *tile, "--workers", "1",
                        "--out", str(state / "out")], check=True, capture_output=True, env=env, cwd=ROOT)
        seconds = time.perf_counter() - start
        return len(list((state / "datums" / "renderer").iterdir())), seconds

    return _fit(_best_of(rounds, [*edges, None], one_run))[0]


def _best_of(rounds: int, edges: list[int | None], run: Callable[[int | None], tuple[int, float]]
             ) -> list[tuple[int, float]]:
    """Run every edge once per round (interleaved, so drifting load hits all alike); keep each one's fastest."""
    best: dict[int | None, tuple[int, float]] = {}
    for _ in range(rounds):
        for edge in edges:
            tiles, seconds = run(edge)
            best[edge] = (tiles, min(seconds, best.get(edge, (0, seconds))[1]))
    for edge, (tiles, seconds) in best.items():
        print(f"  {'whole' if edge is None else f'{edge} px':>6}: {tiles:4} tiles in {seconds:6.2f} s", flush=True)
    return list(best.values())


def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares ``seconds = slope * tiles + intercept``."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    return slope, mean_y - slope * mean_x


@contextmanager
def _quiet() -> Iterator[None]:
    """Blender prints a line per saved tile on fd 1; keep the bench's own output readable."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def report(shot: Shot, costs: Costs) -> None:
    """One table per job: makespan / ideal for each tile size and farm shape, then the choice."""
    names = list(FARM_SHAPES)
    print(f"\n{shot.region.width}x{shot.region.height}, {shot.frames} frame(s): makespan / ideal")
    print(f"{'tile':>12} " + " ".join(f"{name:>17}" for name in names))
    rows = [TileSize(edge, edge) for edge in SIMULATED_TILES] + [TileSize()]
    for tile in rows:
        cells = [makespan(shot, tile, speeds, costs) / ideal(shot, speeds, costs) for speeds in FARM_SHAPES.values()]
        print(f"{str(tile):>12} " + " ".join(f"{cell:17.2f}" for cell in cells))
    chosen = {name: choose(shot, speeds, costs) for name, speeds in FARM_SHAPES.items()}
    print(f"{'auto chooses':>12} " + " ".join(f"{str(tile):>17}" for tile in chosen.values()))
    ratios = [makespan(shot, chosen[name], speeds, costs) / ideal(shot, speeds, costs)
              for name, speeds in FARM_SHAPES.items()]
    print(f"{'auto ratio':>12} " + " ".join(f"{ratio:17.2f}" for ratio in ratios))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="320x180", help="demo scene size to measure")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", default="16,32,64,128", help="tile edges to measure")
    parser.add_argument("--rounds", type=int, default=2, help="passes per tile size; the fastest counts")
    parser.add_argument("--job", action="append", help="WxHxFRAMES to simulate (repeatable)")
    parser.add_argument("--overhead", type=float, help="skip measuring: per-tile overhead, seconds")
    parser.add_argument("--pixel", type=float, help="skip measuring: per-pixel cost, seconds")
    args = parser.parse_args()
    if args.overhead is not None and args.pixel is not None:
        costs = Costs(args.overhead, args.pixel)
    else:
        edges = [int(v) for v in args.sizes.split(",")]
        width, height = (int(v) for v in args.size.split("x"))
        with tempfile.TemporaryDirectory(prefix="farm-hetero-") as tmp:
            blend = Path(tmp) / "demo.blend"
            subprocess.run([sys.executable, "-m", "farm_pipelines.blender.demo_scene", str(blend), "--size",
                            args.size, "--samples", str(args.samples), "--frames", "1"],
                           check=True, capture_output=True, cwd=ROOT)
            print(f"demo scene {args.size}, {args.samples} samples, {os.cpu_count()} cores")
            print(f"in one Blender process, {args.threads} thread(s):")
            in_process = measure(blend, (width, height), args.threads, edges, args.rounds)
            print(f"per-tile overhead {in_process.overhead_s * 1000:.1f} ms, "
                  f"per-pixel cost {in_process.pixel_s * 1e6:.1f} us")
            print("through the local farm, 1 worker:")
            costs = Costs(measure_farm(blend, edges, args.rounds), in_process.pixel_s)
    print(f"simulating with per-tile overhead {costs.overhead_s * 1000:.1f} ms, per-pixel cost "
          f"{costs.pixel_s * 1e6:.1f} us ({costs.overhead_s / costs.pixel_s:.0f} pixels' worth)")
    for job in args.job or ["1920x1080x24", f"{args.size}x3"]:
        width, height, frames = (int(v) for v in job.split("x"))
        report(Shot((width, height), Box(0, 0, width, height), frames), costs)


if __name__ == "__main__":
    main()
