"""Renderer workers are bounded by the tile count and by memory (issue 14, part 3).

The arithmetic (``farm_pipelines.local.memory``) is tested on its own; the bounds are
tested through the CLI on real scenes: a 2-tile job given 8 workers keeps 2 Blender
processes once it is split, and a scene whose worker peaks near 0.8 GB, under a
``FARM_MEMORY_LIMIT`` that holds one such worker, renders on one worker and says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FARM, ROOT, make_scene, max_difference, render_whole

from farm_pipelines.errors import BadInput
from farm_pipelines.local import memory, worker_memory

# A 4096x4096 float image texture: Blender holds it, and Cycles a copy, so a worker peaks near 0.8 GB
# (0.26 GB of it Blender's own start) while the .blend stays small (the image is generated on load).
HEAVY_SCENE = """
import bpy, sys
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.samples = 1
scene.cycles.use_denoising = False
scene.render.resolution_x, scene.render.resolution_y = 32, 16
scene.render.image_settings.file_format = "PNG"
scene.frame_start = scene.frame_end = 1
image = bpy.data.images.new("Big", 4096, 4096, float_buffer=True)
image.generated_type = "COLOR_GRID"
material = bpy.data.materials.new("Grid")
material.use_nodes = True
tree = material.node_tree
texture = tree.nodes.new("ShaderNodeTexImage")
texture.image = image
tree.links.new(texture.outputs["Color"], tree.nodes["Principled BSDF"].inputs["Base Color"])
bpy.ops.mesh.primitive_plane_add(size=4)
bpy.context.object.data.materials.append(material)
bpy.ops.object.camera_add(location=(0, 0, 4))
scene.camera = bpy.context.object
bpy.ops.object.light_add(type="SUN")
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1])
"""


def test_sizes_parse_in_binary_units() -> None:
    assert memory.parse_size("4G") == 4 << 30
    assert memory.parse_size(" 512m ") == 512 << 20
    assert memory.parse_size("1.5GiB") == 3 << 29
    assert memory.parse_size("800MB") == 800 << 20
    assert memory.parse_size("1048576") == 1 << 20
    for bad in ("", "four gigs", "4X", "-1G", "0"):
        with pytest.raises(ValueError):
            memory.parse_size(bad)


def test_a_bad_limit_is_bad_input_in_one_line() -> None:
    assert memory.limit_from(None) is None and memory.limit_from(" ") is None
    assert memory.limit_from("2G") == 2 << 30
    with pytest.raises(BadInput, match=r"FARM_MEMORY_LIMIT='lots' is not a memory size; give one such as 4G"):
        memory.limit_from("lots")


def test_proc_fields_are_read_in_bytes() -> None:
    status = "Name:\tpython\nVmPeak:\t 900 kB\nVmHWM:\t  794144 kB\nVmRSS:\t  282864 kB\n"
    assert memory.status_field(status, "VmHWM") == 794144 * 1024
    assert memory.status_field(status, "VmRSS") == 282864 * 1024
    assert memory.status_field("MemTotal: 10 kB\nMemAvailable:   6291456 kB\n", "MemAvailable") == 6 << 30
    assert memory.status_field("VmRSS: 5 kB\n", "VmHWM") is None


def test_how_many_workers_fit() -> None:
    gib = 1 << 30
    assert memory.workers_that_fit(int(1.8 * gib), int(6.1 * gib), 8) == 3
    assert memory.workers_that_fit(gib, 64 * gib, 8) == 8  # never more than there are
    assert memory.workers_that_fit(30 * gib, 6 * gib, 8) == 1  # one is tried even if it may not fit
    assert memory.bound_line(int(1.8 * gib), 3, 8, int(6.1 * gib), limited=False) == (
        "the scene needs about 1.8 GB per worker; 3 of 8 workers fit in 6.1 GB available: rendering with 3")
    assert memory.bound_line(gib, 1, 2, 2 * gib, limited=True).endswith(
        "1 of 2 workers fit in the 2.0 GB of FARM_MEMORY_LIMIT: rendering with 1")


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="reads /proc (Linux)")
def test_the_first_datum_is_gated_only_when_the_workers_could_overflow() -> None:
    available = worker_memory.available_memory()
    assert available and available > 0
    free_run = worker_memory.MemoryGuard(limit=None)
    free_run.expect(estimate=1 << 20, workers=8, held=0)  # 8 MB for 8 workers fits any machine
    assert free_run.admit("a") and free_run.admit("b")
    risky = worker_memory.MemoryGuard(limit=None)
    risky.expect(estimate=available, workers=2, held=0)  # two workers of all that is available do not fit
    assert risky.admit("a") and not risky.admit("b")
    limited = worker_memory.MemoryGuard(limit=64 << 30)
    limited.expect(estimate=None, workers=2, held=0)  # a budget the user set is always measured first
    assert limited.admit("a") and not limited.admit("b") and limited.admit("a")
    limited.release("a")  # "a" died before it was measured: "b" goes alone in its turn
    assert limited.admit("b") and not limited.admit("a")
    assert limited.settled(os.getpid())  # a real peak: this process's own VmHWM
    assert limited.need is not None and limited.need > 1 << 20  # this Python holds more than 1 MB
    assert not limited.admit("a"), "the gate stays shut until the caller has decided on the measurement"
    limited.release("b")
    assert limited.admit("a") and limited.admit("c")
    assert not limited.settled(os.getpid()), "the same peak again needs no new decision"
    assert worker_memory.process_memory(2 ** 22 + 12345, "VmHWM") is None  # no such process


def _renderer_processes(farm_pid: int) -> int:
    """Live (not zombie) renderer worker processes that the farm process ``farm_pid`` started."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if stat[0] != "Z" and int(stat[1]) == farm_pid and b"farm_pipelines.pipelines.renderer" in cmdline:
            count += 1
    return count


def _tiles_rendered(log: Path) -> int:
    return sum(" done" in line and line.startswith("renderer:") for line in log.read_text().splitlines())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts processes through /proc (Linux)")
def test_eight_workers_on_two_tiles_keep_two(tmp_path: Path) -> None:
    blend = make_scene(tmp_path / "two_tiles.blend", size=[32, 16], frames=[1, 1])
    state, out = tmp_path / "state", tmp_path / "farm"
    run = subprocess.Popen([*FARM, "render", str(blend), "--tile", "16", "--workers", "8", "--out", str(out)],
                           env=dict(os.environ, FARM_STATE_DIR=str(state)), cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    most_before, after_split = 0, None
    deadline = time.monotonic() + 300
    while run.poll() is None and time.monotonic() < deadline:
        live = _renderer_processes(run.pid)
        logs = list(state.glob("logs/renderer/*/*.log"))
        if any(_tiles_rendered(log) for log in logs):  # the job is split and a tile is done
            time.sleep(0.5)  # a stopped worker has had its SIGTERM since the split: it has gone by now
            after_split = _renderer_processes(run.pid)
            break
        most_before = max(most_before, live)
        time.sleep(0.05)
    output = run.communicate(timeout=300)[0]
    assert run.returncode == 0, output
    logs = list(state.glob("logs/renderer/*/*.log"))
    assert len(logs) == 8, "every worker started its Blender before the tile count was known"
    assert most_before > 2, f"only {most_before} renderer processes ran at once before the split"
    assert after_split is not None and after_split <= 2, f"{after_split} renderer processes after the split"
    stopped = [log for log in logs if "stopped: the stage has 2 datum(s) for 8 worker(s)" in log.read_text()]
    assert len(stopped) == 6
    assert sum(_tiles_rendered(log) for log in logs) == 2
    plain = render_whole(blend, tmp_path / "plain", [1])
    assert max_difference(out / "000001.png", plain[1]) == 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="measures workers through /proc (Linux)")
def test_memory_holds_one_of_two_workers(tmp_path: Path) -> None:
    blend = tmp_path / "heavy.blend"
    subprocess.run([sys.executable, "-c", HEAVY_SCENE, str(blend)], check=True, capture_output=True)
    state, out = tmp_path / "state", tmp_path / "farm"
    # A worker peaks near 0.8 GB here: 1.2 GB holds one of them, not two.
    done = subprocess.run([*FARM, "render", str(blend), "--tile", "16x8", "--workers", "2", "--out", str(out)],
                          env=dict(os.environ, FARM_STATE_DIR=str(state), FARM_MEMORY_LIMIT="1200M"), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "per worker" in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith("the scene needs about 0.") and lines[0].endswith(
        "1 of 2 workers fit in the 1.2 GB of FARM_MEMORY_LIMIT: rendering with 1"), lines[0]
    rendered = sorted(_tiles_rendered(log) for log in state.glob("logs/renderer/*/*.log"))
    assert rendered == [0, 4], "one worker renders all four tiles; the other never loads the scene"
    plain = render_whole(blend, tmp_path / "plain", [1])
    assert max_difference(out / "000001.png", plain[1]) == 0


def test_a_bad_memory_limit_exits_2(tmp_path: Path) -> None:
    blend = make_scene(tmp_path / "scene.blend", size=[16, 16], frames=[1, 1])
    done = subprocess.run([*FARM, "render", str(blend), "--out", str(tmp_path / "farm")],
                          env=dict(os.environ, FARM_STATE_DIR=str(tmp_path / "state"), FARM_MEMORY_LIMIT="lots"),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "FARM_MEMORY_LIMIT='lots' is not a memory size" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "farm").exists() or not any((tmp_path / "farm").iterdir())
