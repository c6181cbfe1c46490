"""What compositing once on the whole frame costs, and what it buys: the demo scene with a
Glare -> Blur compositor and OpenImageDenoise, rendered three ways.

    .venv/bin/python bench/composite.py [--size 320x180] [--samples 32] [--tile 64] [--picture docs/compositing.png]

Times, per frame, in one Blender: the 3D render of a tile set's worth of pixels
(the whole frame, compositing and denoising off, every pass to multilayer EXR, as
tiles render), the farm's final step (``FrameEncoder.composite``: the scene's
compositor and the denoiser on the stitched frame, then the write; median of
``--repeats``, as every time here), and a plain whole-frame render doing all of it. Then measures the whole-frame
render against the naive tiled way (each tile composited and denoised on its own)
and the farm's tiles, and saves the three side by side, with differences x8 below.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farm_pipelines.seams import mean_difference, paste, seam_excess  # noqa: E402
from farm_pipelines.tiles import Box, split  # noqa: E402

TIMING = """
import sys, time
from pathlib import Path
import bpy
from farm_pipelines.blender import session
from farm_pipelines.blender.encode import FrameEncoder
blend, work, repeats = Path(sys.argv[-3]), Path(sys.argv[-2]), int(sys.argv[-1])

def median_seconds(action):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]

def render(scene, path):
    scene.frame_set(1)
    scene.render.filepath = str(path)
    return median_seconds(lambda: bpy.ops.render.render(write_still=True))

plain = render(session.open_untrusted(blend), work / "plain.png")
scene = session.open_untrusted(blend)
render_settings, cycles = scene.render, scene.cycles
size = (render_settings.resolution_x, render_settings.resolution_y)
render_settings.use_compositing = cycles.use_denoising = False
for layer in scene.view_layers:
    layer.cycles.denoising_store_passes = True
render_settings.image_settings.media_type = "MULTI_LAYER_IMAGE"
render_settings.image_settings.color_depth = "32"
rendered = render(scene, work / "layers.exr")
scene = session.open_untrusted(blend)
encoder = FrameEncoder(scene)
composited = median_seconds(lambda: encoder.composite(1, work / "layers.exr", size,
                                                      work / f"composited{encoder.extension}"))
print("seconds", rendered, composited, plain)
"""


def run(*argv: str, env: dict | None = None) -> str:
    return subprocess.run([sys.executable, *argv], check=True, capture_output=True, text=True, cwd=ROOT,
                          env=env).stdout


def labelled(image: np.ndarray, text: str) -> np.ndarray:
    image = image[..., :3].copy()
    cv2.putText(image, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--picture", type=Path, default=ROOT / "docs" / "compositing.png")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="farm-bench-composite-") as tmp:
        tmp = Path(tmp)
        plain, blend = tmp / "demo.blend", tmp / "composited.blend"
        run("-m", "farm_pipelines.blender.demo_scene", str(plain), "--size", args.size, "--samples",
            str(args.samples), "--frames", "1")
        run(str(ROOT / "tests" / "compositing_scene.py"), "edit", str(plain), str(blend),
            json.dumps({"glare_blur": True, "denoise": True}))
        timing = run("-c", TIMING, str(blend), str(tmp), str(args.repeats))
        rendered, composited, plain = (float(v) for v in timing.split("seconds ", 1)[1].split()[:3])

        whole_script = ("import bpy, sys\nbpy.ops.wm.open_mainfile(filepath=sys.argv[-2], use_scripts=False)\n"
                        "bpy.context.scene.render.filepath = sys.argv[-1]\n"
                        "bpy.context.scene.render.image_settings.file_format = 'PNG'\n"
                        "bpy.ops.render.render(write_still=True)\n")
        run("-c", whole_script, str(blend), str(tmp / "whole.png"))
        run(str(ROOT / "tests" / "compositing_scene.py"), "naive", str(blend), str(tmp / "naive"),
            json.dumps({"tile": [args.tile, args.tile], "frame": 1}))
        env = dict(os.environ, FARM_STATE_DIR=str(tmp / "state"))
        run("-m", "farm_pipelines.cli", "render", str(blend), "--tile", str(args.tile), "--format", "png",
            "--out", str(tmp / "farm"), env=env)

        boxes = split(Box(0, 0, *size), args.tile, args.tile)
        whole = cv2.imread(str(tmp / "whole.png"), cv2.IMREAD_UNCHANGED)
        naive = paste(boxes, [cv2.imread(str(tmp / "naive" / f"{i:04d}.png"), cv2.IMREAD_UNCHANGED)
                              for i in range(len(boxes))], size)
        ours = cv2.imread(str(tmp / "farm" / "000001.png"), cv2.IMREAD_UNCHANGED)

    print(f"demo scene {args.size}, {args.samples} samples, Glare + Blur + OpenImageDenoise, "
          f"{os.cpu_count()} cores")
    print(f"render, compositing and denoising off   {rendered:6.2f} s/frame")
    print(f"final composite + denoise + write        {composited:6.2f} s/frame  "
          f"({composited / rendered:.0%} of the render)")
    print(f"plain Blender, whole frame, all of it    {plain:6.2f} s/frame  "
          f"(so the farm's step adds {(rendered + composited) / plain - 1:+.0%} over one machine)")
    print(f"{'against one whole-frame render':40} {'mean':>6} {'seam':>6}   (8-bit steps)")
    for label, image in (("naive tiles", naive), (f"farm tiles ({args.tile} px)", ours)):
        print(f"{label:40} {mean_difference(image, whole):6.3f} {seam_excess(image, whole, boxes):6.0f}")

    def difference(image: np.ndarray) -> np.ndarray:
        return np.clip(np.abs(image.astype(np.int32) - whole.astype(np.int32)) * 8, 0, 255).astype(np.uint8)

    top = np.hstack([labelled(whole, "whole frame"), labelled(naive, "naive tiles"), labelled(ours, "farm tiles")])
    bottom = np.hstack([labelled(np.zeros_like(whole), "difference x8:"), labelled(difference(naive), "naive"),
                        labelled(difference(ours), "farm")])
    args.picture.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.picture), np.vstack([top, bottom]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"picture: {args.picture}")


if __name__ == "__main__":
    main()
