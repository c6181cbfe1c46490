"""Output formats a plain render writes that tiles cannot: an FFMPEG movie, stereo views, multilayer EXR.

Each scene is the tiny test scene (32x18, 2 samples, 2 frames) set to that output by bpy, rendered
through the CLI on the local farm and compared with plain Blender's render of the same scene.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
from conftest import ROOT, farm, make_scene, read_image

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
import cv2  # noqa: E402

from farm_pipelines import movie  # noqa: E402
from farm_pipelines.job import JobSettings  # noqa: E402

_OUTPUTS = {
    # Blender 5.0 picks the media type first; a VIDEO scene then writes FFMPEG.
    "ffmpeg": "im.media_type = 'VIDEO'\n"
              "s.render.ffmpeg.format, s.render.ffmpeg.codec = 'MPEG4', 'H264'\n"
              "s.render.ffmpeg.constant_rate_factor = 'HIGH'\n",
    "stereo": "s.render.use_multiview = True\n",
    "multilayer": "im.media_type = 'MULTI_LAYER_IMAGE'\n",
    # The compositor inverts the render; the view layer also writes its Depth pass.
    "multilayer_composited": "im.media_type = 'MULTI_LAYER_IMAGE'\n"
                             "s.view_layers[0].use_pass_z = True\n"
                             "tree = bpy.data.node_groups.new('Invert', 'CompositorNodeTree')\n"
                             "tree.interface.new_socket('Image', in_out='OUTPUT', socket_type='NodeSocketColor')\n"
                             "layers, invert = tree.nodes.new('CompositorNodeRLayers'), "
                             "tree.nodes.new('CompositorNodeInvert')\n"
                             "tree.links.new(layers.outputs['Image'], invert.inputs[1])\n"
                             "tree.links.new(invert.outputs[0], tree.nodes.new('NodeGroupOutput').inputs[0])\n"
                             "s.compositing_node_group = tree\n",
}
_OUTPUTS["multilayer_denoised"] = _OUTPUTS["multilayer"] + "s.cycles.use_denoising, s.cycles.samples = True, 8\n"
_OUTPUTS["multilayer_composited_denoised"] = _OUTPUTS["multilayer_composited"] + "s.cycles.use_denoising = True\n"


@pytest.fixture(scope="module")
def base_scene(tmp_path_factory) -> Path:
    return make_scene(tmp_path_factory.mktemp("base") / "base.blend", size=[32, 18], samples=2, frames=[1, 2])


def scene_with_output(base: Path, tmp_path: Path, kind: str) -> Path:
    blend = tmp_path / f"{kind}.blend"
    script = ("import bpy, sys\n"
              "bpy.ops.wm.open_mainfile(filepath=sys.argv[-2], load_ui=False, use_scripts=False)\n"
              "s = bpy.context.scene\n"
              "im = s.render.image_settings\n"
              + _OUTPUTS[kind] +
              "bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1])\n")
    subprocess.run([sys.executable, "-c", script, str(base), str(blend)], check=True, capture_output=True)
    return blend


def plain_render(blend: Path, out_dir: Path, frames: list[int], as_png: bool = False) -> dict[int, Path]:
    """Plain Blender, whole frames; ``as_png``: the scene's output switched to PNG images, as an artist would."""
    script = ("import bpy, sys\n"
              "bpy.ops.wm.open_mainfile(filepath=sys.argv[-3], load_ui=False, use_scripts=False)\n"
              "s = bpy.context.scene\n"
              + ("s.render.image_settings.media_type = 'IMAGE'\ns.render.image_settings.file_format = 'PNG'\n"
                 if as_png else "") +
              "for frame in [int(f) for f in sys.argv[-1].split(',')]:\n"
              "    s.frame_set(frame)\n"
              "    s.render.filepath = f'{sys.argv[-2]}/{frame:06d}'\n"
              "    bpy.ops.render.render(write_still=True)\n")
    subprocess.run([sys.executable, "-c", script, str(blend), str(out_dir), ",".join(map(str, frames))],
                   check=True, capture_output=True)
    return {f: next(out_dir.glob(f"{f:06d}.*")) for f in frames}


def prepare_facts(blend: Path, tmp_path: Path) -> dict:
    """What prepare reports for ``blend``, from the real prepare entry point."""
    result = tmp_path / "prepare.json"
    subprocess.run([sys.executable, "-m", "farm_pipelines.blender.prepare", str(blend), str(tmp_path / "copy.blend"),
                    json.dumps(JobSettings().to_json()), str(result)], check=True, capture_output=True, cwd=ROOT)
    return json.loads(result.read_text())


def movie_properties(path: Path) -> tuple[int, tuple[int, int], float, list[np.ndarray]]:
    """Frame count, size and frame rate as a player decodes them (OpenCV's FFmpeg), and the frames."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"cannot decode {path}"
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    return len(frames), size, fps, frames


def test_an_ffmpeg_scene_renders_as_png_frames_and_its_movie_is_encoded(base_scene, tmp_path, state):
    blend = scene_with_output(base_scene, tmp_path, "ffmpeg")
    out = tmp_path / "frames"

    done = farm("render", blend, "--tile", "16", "--out", out, state=state)

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "the scene writes a movie (MPEG4 H264): the farm renders PNG frames" in done.stderr
    assert "24 fps" in done.stderr and f"movie: {out / '000001-000002.mp4'}" in done.stderr
    frames = sorted(out.glob("*.png"))
    assert [p.name for p in frames] == ["000001.png", "000002.png"]
    reference = plain_render(blend, tmp_path / "plain", [1, 2], as_png=True)
    for frame, whole in reference.items():
        farm_frame, plain_frame = read_image(out / f"{frame:06d}.png"), read_image(whole)
        assert farm_frame.shape == plain_frame.shape == (18, 32, 3)  # a movie scene is RGB
        assert np.array_equal(farm_frame, plain_frame), f"frame {frame} differs from plain Blender's PNG"

    facts = prepare_facts(blend, tmp_path)["movie"]
    assert facts["container"] == "MPEG4" and facts["codec"] == "H264" and facts["frames_format"] == "PNG"
    encoded = out / "000001-000002.mp4"  # written by the farm once every frame landed
    count, size, fps, decoded = movie_properties(encoded)
    assert (count, size, fps) == (2, (32, 18), 24.0)
    for image, frame in zip(decoded, frames, strict=True):  # H.264 is lossy: the same picture, near enough
        assert np.abs(image.astype(int) - read_image(frame)[..., :3].astype(int)).mean() < 8
    assert sorted(p.name for p in out.iterdir()) == ["000001-000002.mp4", "000001.png", "000002.png"]


def test_the_movie_keeps_the_frame_rate_pads_odd_sizes_and_skips_no_frame(tmp_path):
    """Frames 1, 4, 7 (a frame step) of 33x19 at 29.97 fps in Matroska: three frames, 34x20, as Flamenco pads."""
    frames = []
    for index, number in enumerate((1, 4, 7)):
        image = np.full((19, 33, 3), 60 * index + 30, np.uint8)
        frames.append(tmp_path / f"{number:06d}.png")
        assert cv2.imwrite(str(frames[-1]), image)
    facts = {"container": "MKV", "codec": "H264", "crf": "HIGH", "fps": 30, "fps_base": 1.001,
             "frames_format": "PNG", "file_format": "FFMPEG"}
    warnings: list[str] = []

    encoded = movie.encode_movie(frames, facts, tmp_path / "out", warnings.append)

    assert encoded == tmp_path / "out" / "000001-000007.mkv" and warnings == []
    count, size, fps, decoded = movie_properties(encoded)
    assert (count, size) == (3, (34, 20)) and abs(fps - 30000 / 1001) < 1e-3
    levels = [float(image[5:15, 5:25].mean()) for image in decoded]  # each frame once, in order
    assert all(abs(level - wanted) < 4 for level, wanted in zip(levels, (30, 90, 150), strict=True)), levels
    assert str(movie.frame_rate(facts)) == "30000/1001"


def test_without_ffmpeg_or_from_exr_frames_there_is_no_movie_and_a_line_says_why(tmp_path):
    """A Python without imageio-ffmpeg (``-S``: no site-packages) and no ffmpeg on PATH."""
    frame = tmp_path / "000001.png"
    assert cv2.imwrite(str(frame), np.zeros((4, 4, 3), np.uint8))
    facts = {"container": "MPEG4", "codec": "H264", "crf": "HIGH", "fps": 24, "fps_base": 1.0}
    script = ("import sys; from pathlib import Path; from farm_pipelines import movie\n"
              f"print(movie.encode_movie([Path({str(frame)!r})], {facts!r}, Path({str(tmp_path)!r}), print))\n")
    done = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": str(tmp_path), "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "no movie: ffmpeg was not found (not on PATH, and the imageio-ffmpeg package is not installed); the frames "
        "are all there: install ffmpeg and run the same command again to encode it", "None"]

    exr = tmp_path / "000002.exr"
    assert cv2.imwrite(str(exr), np.zeros((4, 4, 3), np.float32))
    warnings: list[str] = []
    assert movie.encode_movie([exr], facts, tmp_path, warnings.append) is None
    assert warnings == ["no movie: the frames are .exr files, whose linear light ffmpeg would show as if it were "
                        "an image's; render with --format png to get the movie too"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000001.png", "000002.exr"]


@pytest.mark.parametrize(("kind", "error"), [
    ("stereo", "renders stereo or multi-view, which the farm does not (it renders one view); turn off "
               "Stereoscopy in Output Properties"),
    ("multilayer_composited_denoised",
     "writes multilayer EXR with Cycles' denoiser on and its compositor or several view layers, and the farm "
     "cannot yet write the denoised view layers that Blender writes; turn off Denoise in Render Properties (a "
     "Denoise node in the compositor works), or choose --format exr or png"),
])
def test_a_scene_the_farm_cannot_write_as_blender_does_is_refused_before_anything_renders(
        base_scene, tmp_path, state, kind, error):
    blend = scene_with_output(base_scene, tmp_path, kind)
    out = tmp_path / "frames"

    done = farm("render", blend, "--tile", "16", "--out", out, state=state)

    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"farm: error: {blend}: scene 'Scene' {error}"]
    assert not out.exists()
    assert not (state / "repos" / "renderer").exists() or not any((state / "repos" / "renderer").rglob("*.exr"))


def exr_channels(path: Path) -> dict[str, np.ndarray]:
    return {name: channel.pixels for part in OpenEXR.File(str(path), separate_channels=True).parts
            for name, channel in part.channels.items()}


@pytest.mark.parametrize(("kind", "tiling", "names"), [
    ("multilayer", ["--tile", "16"], ["ViewLayer.Combined.A", "ViewLayer.Combined.B", "ViewLayer.Combined.G",
                                      "ViewLayer.Combined.R"]),
    ("multilayer", ["--whole-frame"], ["ViewLayer.Combined.A", "ViewLayer.Combined.B", "ViewLayer.Combined.G",
                                       "ViewLayer.Combined.R"]),
    # Cycles keeps what it denoised as Noisy Image; the farm denoises the stitched frame and keeps it too.
    ("multilayer_denoised", ["--tile", "16"], [
        "ViewLayer.Combined.A", "ViewLayer.Combined.B", "ViewLayer.Combined.G", "ViewLayer.Combined.R",
        "ViewLayer.Noisy Image.A", "ViewLayer.Noisy Image.B", "ViewLayer.Noisy Image.G", "ViewLayer.Noisy Image.R"]),
    ("multilayer_composited", ["--tile", "16"], [
        "Composite.Combined.A", "Composite.Combined.B", "Composite.Combined.G", "Composite.Combined.R",
        "ViewLayer.Combined.A", "ViewLayer.Combined.B", "ViewLayer.Combined.G", "ViewLayer.Combined.R",
        "ViewLayer.Depth.Z"]),
])
def test_multilayer_exr_has_the_layers_and_pixels_of_a_plain_render(base_scene, tmp_path, state, kind, tiling,
                                                                     names):
    """Layers named by the view layer (``ViewLayer.*``), ``Composite`` only where the scene composites."""
    blend = scene_with_output(base_scene, tmp_path, kind)
    out = tmp_path / "frames"

    done = farm("render", blend, *tiling, "--frames", "1", "--out", out, state=state)

    assert done.returncode == 0, done.stderr
    plain = exr_channels(plain_render(blend, tmp_path / "plain", [1])[1])
    farmed = exr_channels(out / "000001.exr")
    assert sorted(plain) == names
    assert sorted(farmed) == names
    for name in names:
        assert farmed[name].dtype == plain[name].dtype, name
        assert np.array_equal(farmed[name], plain[name]), f"{name}: max difference " \
            f"{np.abs(farmed[name].astype(np.float64) - plain[name]).max()}"


def test_a_whole_frame_multilayer_with_a_composite_fails_in_one_line_and_writes_nothing(base_scene, tmp_path, state):
    """A whole-frame render reaches the merge as its composite only: its passes would be zeros, so no frame."""
    blend = scene_with_output(base_scene, tmp_path, "multilayer_composited")
    out = tmp_path / "frames"

    done = farm("render", blend, "--whole-frame", "--frames", "1", "--out", out, state=state)

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("farm:")] == [
        "farm: failed: merging failed: frame 1: the scene writes its passes or composite to a multilayer EXR, which "
        "a whole-frame render does not carry to the farm's merge; render it in tiles smaller than the frame (--tile)"]
    assert not out.exists()
