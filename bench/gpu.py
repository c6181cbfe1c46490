"""GPU check for a machine with a GPU and bpy: devices, tile speed against the CPU, and mixed-device frames.

    .venv/bin/python bench/gpu.py [--size 512] [--samples 128] [--tile 256]

1. the GPUs Cycles finds, per backend (the farm's own probe, ``farm_pipelines.blender.devices``);
2. one ``--tile`` px tile of the demo scene on each backend that has a GPU, and on the CPU: render
   seconds (Blender's start and scene load not counted) and the speed ratio to the CPU;
3. a frame whose tiles alternate between the first GPU and the CPU, stitched, against a whole-frame
   render on each device: the largest difference in 8-bit steps. The farm keeps each frame on one
   kind of device (``gpu.frame_digits``, ``Scheduler.one_device_per_frame``); if this prints more
   than 1 for CPU against GPU, that is why;
4. ``farm render`` of the same scene: the lines in which the farm names its GPU workers and what each
   renders on, and its frame against both whole-frame renders.

It runs in about three minutes with a GPU. Without one it times the CPU tile and says no GPU was
found; no machine this project is tested on has a GPU, so its GPU figures are for users to measure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")

import cv2  # noqa: E402

from farm_pipelines import gpu  # noqa: E402
from farm_pipelines.tiles import Box, border_for_box, split  # noqa: E402

#: Makes the demo scene ask for GPU rendering (Render Properties > Device: GPU Compute), as an artist would.
ASK_FOR_GPU = """
import bpy, sys
bpy.ops.wm.open_mainfile(filepath=sys.argv[-1], load_ui=False, use_scripts=False)
bpy.context.scene.cycles.device = "GPU"
bpy.ops.wm.save_mainfile()
"""

#: Renders regions of one scene on one device, in one Blender process; prints each render's seconds.
RENDER = """
import json, sys, time
import bpy
from farm_pipelines import gpu
from farm_pipelines.blender import devices
blend, device, jobs = sys.argv[-3], json.loads(sys.argv[-2]), json.loads(sys.argv[-1])
bpy.ops.wm.open_mainfile(filepath=blend, load_ui=False, use_scripts=False)
scene = bpy.context.scene
choice = gpu.Choice(None) if device is None else gpu.Choice(device["backend"], (gpu.Device.from_json(device),))
devices.use_devices(scene, choice)
r = scene.render
r.image_settings.file_format, r.dither_intensity, r.use_crop_to_border = "PNG", 0.0, True
seconds = []
for border, path in jobs:
    r.use_border = border is not None
    if border:
        r.border_min_x, r.border_min_y, r.border_max_x, r.border_max_y = border
    r.filepath = path
    start = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    seconds.append(time.perf_counter() - start)
print("SECONDS " + json.dumps(seconds))
"""


def render(blend: Path, device: gpu.Device | None, jobs: list[tuple[list | None, str]]) -> list[float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", RENDER, str(blend), json.dumps(device and device.to_json()),
                           json.dumps(jobs)], capture_output=True, text=True, env=env, check=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith("SECONDS "))
    return json.loads(line.removeprefix("SECONDS "))


def steps(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--tile", type=int, default=256)
    args = parser.parse_args()
    size, tile = args.size, min(args.tile, args.size)
    with tempfile.TemporaryDirectory(prefix="farm-gpu-bench-") as tmp:
        tmp = Path(tmp)
        probe = tmp / "devices.json"
        subprocess.run([sys.executable, "-m", "farm_pipelines.blender.devices", str(probe)], check=True,
                       capture_output=True, cwd=ROOT)
        found = {b: [gpu.Device.from_json(d) for d in ds] for b, ds in json.loads(probe.read_text()).items()}
        print("1. devices Cycles finds:")
        for backend, listed in found.items():
            print(f"   {backend:7} {', '.join(d.name for d in listed) or '-'}")
        blend = tmp / "demo.blend"
        subprocess.run([sys.executable, "-m", "farm_pipelines.blender.demo_scene", str(blend), "--size",
                        f"{size}x{size}", "--samples", str(args.samples), "--frames", "1"],
                       check=True, capture_output=True, cwd=ROOT)
        subprocess.run([sys.executable, "-c", ASK_FOR_GPU, str(blend)], check=True, capture_output=True)
        centre = Box((size - tile) // 2, (size - tile) // 2, (size + tile) // 2, (size + tile) // 2)
        border = list(border_for_box(centre, size, size))
        # Each tile renders twice in its process and the second counts: the first pays for device
        # set-up, kernel loading and the BVH, which a farm worker pays once for many tiles.
        twice = [(border, str(tmp / "warm.png")), (border, str(tmp / "tile.png"))]
        cpu_seconds = render(blend, None, twice)[1]
        cores = os.cpu_count() or 1
        print(f"2. one {tile} px tile, {args.samples} samples (second render of each process):")
        print(f"   {'CPU, ' + str(cores) + ' threads':28} {cpu_seconds:7.2f} s")
        firsts = [listed[0] for listed in found.values() if listed]
        for device in firsts:
            seconds = render(blend, device, twice)[1]
            name = f"{device.backend} {device.name}"
            print(f"   {name:28} {seconds:7.2f} s  {cpu_seconds / seconds:5.1f}x the CPU, about "
                  f"{cpu_seconds * cores / seconds:.0f} one-thread workers (--tile auto assumes {gpu.GPU_SPEED:g})")
        if not firsts:
            print("   no GPU found: nothing to compare (the farm renders GPU scenes on the CPU here, with a warning)")
            return
        device = firsts[0]
        boxes = split(Box(0, 0, size, size), tile, tile)
        jobs = {kind: [(list(border_for_box(box, size, size)), str(tmp / f"{kind}-{i}.png"))
                       for i, box in enumerate(boxes) if (i % 2 == 0) == (kind == "gpu")] for kind in ("gpu", "cpu")}
        render(blend, device, [(None, str(tmp / "gpu-whole.png")), *jobs["gpu"]])
        render(blend, None, [(None, str(tmp / "cpu-whole.png")), *jobs["cpu"]])
        mixed = np.zeros((size, size, 3), np.uint8)
        for i, box in enumerate(boxes):
            piece = cv2.imread(str(tmp / f"{'gpu' if i % 2 == 0 else 'cpu'}-{i}.png"))
            mixed[size - box.y1:size - box.y0, box.x0:box.x1] = piece  # Blender's y runs up, images' down
        whole = {kind: cv2.imread(str(tmp / f"{kind}-whole.png")) for kind in ("gpu", "cpu")}
        print(f"3. a {size} px frame, tiles alternating {device.backend} and CPU, largest difference in 8-bit steps:")
        print(f"   mixed vs whole on {device.backend}: {steps(mixed, whole['gpu'])}")
        print(f"   mixed vs whole on CPU: {steps(mixed, whole['cpu'])}")
        print(f"   whole {device.backend} vs whole CPU: {steps(whole['gpu'], whole['cpu'])}")
        # The farm's own path: its probe, a worker pinned to the GPU, and what the workers say they use.
        out = tmp / "farm"
        done = subprocess.run([sys.executable, "-m", "farm_pipelines.cli", "render", str(blend), "--tile", str(tile),
                               "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
                              env=dict(os.environ, FARM_STATE_DIR=str(tmp / "state")))
        print(f"4. farm render (exit {done.returncode}):")
        for line in done.stderr.splitlines():
            if "renders on" in line or "GPU worker" in line or line.startswith(("warning:", "farm:")):
                print(f"   {line}")
        if done.returncode == 0:
            farm_frame = cv2.imread(str(next(out.glob("000001.*"))))
            print(f"   farm frame vs whole on {device.backend}: {steps(farm_frame, whole['gpu'])}, "
                  f"vs whole on CPU: {steps(farm_frame, whole['cpu'])}")


if __name__ == "__main__":
    main()
