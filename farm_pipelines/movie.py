"""The movie a scene set to FFMPEG output asks for, encoded by ffmpeg from the frames the farm delivered.

Tiles cannot be stitched into a video stream, so the farm renders such a scene as
image frames (PNG unless ``--format`` says otherwise) and, once every frame has
landed, makes the movie from them. As Flamenco's preview video does: the scene's
frame rate (``fps / fps_base``), H.264 in yuv420p, and each dimension padded up to
an even number, which yuv420p needs. The scene's own container is kept when it
holds H.264 (MP4, Matroska, QuickTime; else MP4) and its quality preset becomes
x264's CRF; another codec the scene asks for is named in the submission's line.

ffmpeg is the one on PATH, else the one the imageio-ffmpeg wheel ships. Without
either, or for EXR frames (ffmpeg would show their linear light as if it were an
image's), no movie is made and ``warn`` says why.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from farm_pipelines import job_folder
from farm_pipelines.atomic_files import atomic_path

#: Blender's ``ffmpeg.format`` -> the extension of a container that holds H.264.
_CONTAINERS = {"MPEG4": ".mp4", "MKV": ".mkv", "QUICKTIME": ".mov"}
#: Blender's ``ffmpeg.constant_rate_factor`` presets -> x264's CRF (Blender's own values).
_CRF = {"LOSSLESS": 0, "PERC_LOSSLESS": 17, "HIGH": 20, "MEDIUM": 23, "LOW": 26, "VERYLOW": 29, "LOWEST": 32}
_DEFAULT_CRF = 20  # Flamenco's preview video; also used for a scene set to a constant bitrate
_IMAGE_INPUTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".tga"}


def frame_rate(facts: dict) -> Fraction:
    """The scene's frame rate exactly enough for ffmpeg: 24, 25, 30000/1001 (``fps_base`` is a float32)."""
    return Fraction(facts["fps"] / facts["fps_base"]).limit_denominator(1001)


def movie_name(facts: dict, frame_numbers: list[int]) -> str:
    """``000001-000250.mp4``: the frame range, as Blender names a movie, in the farm's frame digits;
    not a frame's name, so the output folder's claim (``out_claim``) never takes it for one."""
    return f"{frame_numbers[0]:06d}-{frame_numbers[-1]:06d}{_CONTAINERS.get(facts['container'], '.mp4')}"


def describe(facts: dict) -> str:
    """The submission's one line: what the scene asks for, and what the farm writes instead."""
    container = _CONTAINERS.get(facts["container"], ".mp4")
    asked = f"{facts['container']} {facts['codec']}"
    codec = "" if facts["codec"] == "H264" else f" (H.264, not {facts['codec']})"
    return (f"the scene writes a movie ({asked}): the farm renders {facts['frames_format']} frames and, if "
            f"ffmpeg is found, encodes them into a {container} movie{codec} at {float(frame_rate(facts)):g} fps")


def find_ffmpeg() -> str | None:
    """ffmpeg on PATH first (the user's own build), else imageio-ffmpeg's bundled binary, else None."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:  # the wheel has no binary for this platform
        return None


def ffmpeg_argv(ffmpeg: str, pattern: str, facts: dict, output: Path) -> list[str]:
    """Encode the numbered images ``pattern`` (``…/%06d.png`` from 0) into ``output``."""
    crf = _CRF.get(facts.get("crf", ""), _DEFAULT_CRF) if facts["codec"] == "H264" else _DEFAULT_CRF
    rate = str(frame_rate(facts))
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-framerate", rate, "-start_number", "0", "-i", pattern,
            "-c:v", "libx264", "-crf", str(crf), "-g", "18",
            "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-pix_fmt", "yuv420p", "-r", rate, "-an",
            str(output)]


def encode_movie(frames: list[Path], facts: dict, out_dir: Path, warn: Callable[[str], None],
                 ffmpeg: str | None = None) -> Path | None:
    """Encode ``frames`` (the delivered ``<frame>.<ext>`` files) into ``out_dir``; the movie's path.

    ``facts`` is prepare's ``movie`` fact. Returns None, after ``warn`` said why, when there
    is nothing to encode with or from; the frames are the job's result either way. The movie
    is written under a temporary name and renamed, so no half movie is ever in ``out_dir``.
    """
    frames = sorted(frames, key=lambda path: int(path.stem))
    if not frames:
        warn("no movie: no frame was delivered")
        return None
    if frames[0].suffix.lower() not in _IMAGE_INPUTS:
        warn(f"no movie: the frames are {frames[0].suffix} files, whose linear light ffmpeg would show "
             "as if it were an image's; render with --format png to get the movie too")
        return None
    ffmpeg = ffmpeg or find_ffmpeg()
    if ffmpeg is None:
        warn("no movie: ffmpeg was not found (not on PATH, and the imageio-ffmpeg package is not installed); "
             "the frames are all there: install ffmpeg and run the same command again to encode it")
        return None
    destination = Path(out_dir) / movie_name(facts, [int(path.stem) for path in frames])
    try:
        with tempfile.TemporaryDirectory(prefix="farm-movie-") as numbered, atomic_path(destination) as tmp:
            # ffmpeg reads an image sequence by consecutive numbers; the frames may skip (a frame step).
            for index, frame in enumerate(frames):
                job_folder.link_or_copy(frame.absolute(), Path(numbered) / f"{index:06d}{frame.suffix}")
            pattern = str(Path(numbered) / f"%06d{frames[0].suffix}")
            done = subprocess.run(ffmpeg_argv(ffmpeg, pattern, facts, tmp), capture_output=True, text=True)
            if done.returncode != 0 or not tmp.is_file():
                raise _EncodeFailed((done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1])
    except _EncodeFailed as error:
        warn(f"no movie: ffmpeg could not encode the frames ({error})")
        return None
    return destination


class _EncodeFailed(Exception):
    """ffmpeg's last line, raised inside the atomic write so that its temporary file is removed."""
