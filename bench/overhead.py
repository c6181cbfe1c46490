"""What tiling costs: the demo scene rendered six ways, timed in the same run.

    .venv/bin/python bench/overhead.py [--size 640x360] [--samples 128] [--frames 2] [--rounds 1] [--ways abcdef]

Besides the whole run's time, each way's time to its first frame is measured: from
starting the command to the first frame file appearing in its output folder (polled
every 10 ms), which is what an artist waiting for frame 1 sees.

(a) plain Blender, one process, whole frames; (b) the local farm, 64 px tiles;
(c) the local farm, 16 px tiles; (d) the original article's way, a new Blender
process per 64 px tile; (e) and (f) as (b) and (c), on the local farm run by a
real Pachyderm worker's rules (``FARM_FAITHFUL=1``: one Blender process per
datum set, fresh copies of every datum's inputs), as a cluster would run them.
Ratios are to (a) of the same round; this machine is noisy, so absolute seconds
are not comparable between runs, and with ``--rounds N`` all but (d) run N times
interleaved and the median ratio counts ((d), slow and only a baseline, runs in
round one only). "fastest" is
the ratio of each way's fastest run to plain Blender's fastest, as ``timeit``
reports: other load on the machine only ever adds time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farm_pipelines.tiles import Box, border_for_box, split  # noqa: E402

PLAIN = """
import bpy, sys
bpy.ops.wm.open_mainfile(filepath=sys.argv[-2], load_ui=False, use_scripts=False)
scene = bpy.context.scene
for frame in range(scene.frame_start, scene.frame_end + 1):
    scene.frame_set(frame)
    scene.render.filepath = f"{sys.argv[-1]}/{frame:06d}"
    bpy.ops.render.render(write_still=True)
"""

ONE_TILE = """
import bpy, sys, json
bpy.ops.wm.open_mainfile(filepath=sys.argv[-3], load_ui=False, use_scripts=False)
scene = bpy.context.scene
frame, border = json.loads(sys.argv[-2])
r = scene.render
r.use_border = r.use_crop_to_border = True
r.border_min_x, r.border_min_y, r.border_max_x, r.border_max_y = border
scene.frame_set(frame)
r.filepath = sys.argv[-1]
bpy.ops.render.render(write_still=True)
"""


PLAIN_LABEL = "(a) plain Blender, whole frames"
#: The farm's ways: label, tile size, and whether the local farm follows a real Pachyderm
#: worker's rules (a process per datum set, fresh input copies per datum; ``FARM_FAITHFUL``).
FARM_WAYS = (("(b) local farm, 64 px tiles", "64", False), ("(c) local farm, 16 px tiles", "16", False),
             ("(e) Pachyderm's rules, 64 px tiles", "64", True), ("(f) Pachyderm's rules, 16 px tiles", "16", True))


class Clock:
    """Wall time and CPU time of every child process run inside the block.

    CPU seconds say what the work cost even when other jobs share the machine;
    wall seconds are what a user waits.
    """

    def __enter__(self) -> Clock:
        self._wall = time.perf_counter()
        self._cpu = _children_cpu()
        self.first_frame: float | None = None
        return self

    def run(self, argv: list[str], out_dir: Path, env: dict | None = None) -> None:
        """Run ``argv`` to its end, noting when the first frame file appears in ``out_dir``."""
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while process.poll() is None:
            if self.first_frame is None and _has_frame(out_dir):
                self.first_frame = time.perf_counter() - self._wall
            time.sleep(0.01)
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        if process.returncode != 0:
            raise SystemExit(f"{argv[:4]} failed with code {process.returncode}: {stderr[-2000:]}")
        if self.first_frame is None and _has_frame(out_dir):
            self.first_frame = time.perf_counter() - self._wall

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = _children_cpu() - self._cpu


def _has_frame(folder: Path) -> bool:
    """A finished frame file (``000001.png``), not a temporary one (``.000001.123.tmp.png``)."""
    return folder.is_dir() and any(path.name[:1].isdigit() for path in folder.iterdir())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(argv: list[str], env: dict | None = None) -> None:
    subprocess.run(argv, check=True, capture_output=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--ways", default="abcdef", help="which ways to run, by letter; (a) always runs")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    py = sys.executable
    rounds: list[dict[str, Clock]] = []
    with tempfile.TemporaryDirectory(prefix="farm-bench-") as tmp:
        tmp = Path(tmp)
        blend = tmp / "demo.blend"
        subprocess.run([py, "-m", "farm_pipelines.blender.demo_scene", str(blend), "--size", args.size,
                        "--samples", str(args.samples), "--frames", str(args.frames)],
                       check=True, capture_output=True, cwd=ROOT)
        for number in range(args.rounds):
            results: dict[str, Clock] = {}
            with Clock() as results[PLAIN_LABEL]:
                results[PLAIN_LABEL].run([py, "-c", PLAIN, str(blend), str(tmp / f"a-{number}")], tmp / f"a-{number}")
            for label, tile, faithful in FARM_WAYS:
                if label[1] not in args.ways:
                    continue
                # A fresh state per round, so every tile renders. Old states are deleted only at the
                # end: on ext4 without a journal, thousands of just-freed inodes slow every file
                # created for the next minutes, which would bill the bench's cleanup to the farm.
                state = tmp / f"state-{tile}-{faithful}-{number}"
                env = dict(os.environ, FARM_STATE_DIR=str(state), FARM_FAITHFUL="1" if faithful else "")
                out = tmp / f"out-{tile}-{faithful}-{number}"
                with Clock() as results[label]:
                    results[label].run([py, "-m", "farm_pipelines.cli", "render", str(blend), "--tile", tile,
                                        "--out", str(out)], out, env)
            if number == 0 and "d" in args.ways:
                tiles = split(Box(0, 0, width, height), 64, 64)
                with Clock() as results["(d) a Blender process per 64 px tile"]:
                    for frame in range(1, args.frames + 1):
                        for i, box in enumerate(tiles):
                            datum = json.dumps([frame, border_for_box(box, width, height)])
                            run([py, "-c", ONE_TILE, str(blend), datum, str(tmp / "d" / f"{frame}_{i}.exr")])
            rounds.append(results)
    print(f"demo scene {args.size}, {args.samples} samples, {args.frames} frames, {os.cpu_count()} cores, "
          f"{args.rounds} round(s); medians")
    print(f"{'way':38} {'wall s':>7} {'ratio':>6} {'CPU s':>7} {'ratio':>6} {'fastest':>7} "
          f"{'1st frame s':>11} {'ratio':>6}   wall ratio of each round")
    fastest_plain = min(r[PLAIN_LABEL].wall for r in rounds)
    for label in rounds[0]:
        mine = [(r[label], r[PLAIN_LABEL]) for r in rounds if label in r]
        walls = [c.wall / base.wall for c, base in mine]
        cpus = [c.cpu / base.cpu for c, base in mine]
        seconds = statistics.median(c.wall for c, _ in mine)
        cpu_seconds = statistics.median(c.cpu for c, _ in mine)
        fastest = min(c.wall for c, _ in mine) / fastest_plain
        firsts = [(c.first_frame, base.first_frame) for c, base in mine if c.first_frame and base.first_frame]
        first = (f"{statistics.median(f for f, _ in firsts):11.1f} "
                 f"{statistics.median(f / b for f, b in firsts):6.2f}") if firsts else f"{'-':>11} {'-':>6}"
        print(f"{label:38} {seconds:7.1f} {statistics.median(walls):6.2f} {cpu_seconds:7.1f} "
              f"{statistics.median(cpus):6.2f} {fastest:7.2f} {first}   {' '.join(f'{w:.2f}' for w in walls)}")


if __name__ == "__main__":
    main()
