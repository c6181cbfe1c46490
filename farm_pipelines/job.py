"""A render job: what the user asked for, as stored in ``/<job>/job.json`` of the ``blends`` repo."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

from farm_pipelines.errors import BadInput

#: Output formats the farm writes itself; ``None`` means the scene's own format.
FORMATS = {"png": "PNG", "exr": "OPEN_EXR"}


@dataclass(frozen=True)
class TileSize:
    """``width x height`` in pixels, ``None`` for whole frames, or ``auto``: chosen at submission
    (``farm_pipelines.tile_size``), so a job on the farm always has a concrete size."""

    width: int | None = None
    height: int | None = None
    auto: bool = False

    def __post_init__(self) -> None:
        sizes = (self.width, self.height)
        if sizes == (None, None):
            return
        if self.auto or not all(_whole(v) and v > 0 for v in sizes):
            raise BadInput(f"tile size {self.width}x{self.height} must be two whole numbers above 0 "
                           "(or none, for whole frames or auto)")

    @property
    def whole_frame(self) -> bool:
        return self.width is None and not self.auto

    def __str__(self) -> str:
        if self.auto:
            return "auto"
        return "whole frame" if self.whole_frame else f"{self.width}x{self.height}"


@dataclass(frozen=True)
class FrameRange:
    start: int | None = None  # None: the scene's own
    end: int | None = None
    step: int | None = None  # None: the scene's own ``frame_step``

    def __post_init__(self) -> None:
        if self.step is not None and not (_whole(self.step) and self.step >= 1):
            raise BadInput(f"frame step {self.step} must be a whole number, 1 or more")
        for frame in (self.start, self.end):
            if frame is not None and not (_whole(frame) and -MAX_FRAME <= frame <= MAX_FRAME):
                raise BadInput(f"frame {frame} is not a frame Blender can render (whole numbers from "
                               f"{-MAX_FRAME} to {MAX_FRAME})")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise BadInput(f"frame range {self.start}-{self.end} is empty: the end comes before the start")

    def frames(self, scene_start: int, scene_end: int, scene_step: int = 1) -> list[int]:
        """The frames to render: what was asked, the scene's own range and step filling what was not."""
        start = scene_start if self.start is None else self.start
        end = scene_end if self.end is None else self.end
        return list(range(start, end + 1, self.step or max(1, scene_step)))


#: Frames beyond the scene's own range that are taken for a typo: more than this many, or ten times the scene's.
MANY_OUTSIDE = 1000


def frames_outside(frames: list[int], scene_start: int, scene_end: int) -> str | None:
    """A warning for frames beyond the scene's own range, or None; bad input when they are absurdly many.

    Blender renders any frame (the animation holds its first or last pose), so a few frames past
    the end are the artist's business. A million past a two-frame shot is a typo that would keep the
    farm splitting for minutes: refused at once, in one line.
    """
    outside = [frame for frame in frames if not scene_start <= frame <= scene_end]
    if not outside:
        return None
    shown = f"{frames[0]}-{frames[-1]}" if len(frames) > 1 else str(frames[0])
    if len(outside) > max(MANY_OUTSIDE, 10 * (scene_end - scene_start + 1)):
        raise BadInput(f"frames {shown} are {len(outside)} frames beyond the scene's range "
                       f"{scene_start}-{scene_end}: check --frames, or extend the scene's frame range in Blender "
                       "if you mean them")
    return (f"{len(outside)} of frames {shown} lie beyond the scene's range {scene_start}-{scene_end}; "
            "Blender renders them as the animation stands there")


@dataclass(frozen=True)
class JobSettings:
    tile: TileSize = field(default_factory=lambda: TileSize(64, 64))
    frames: FrameRange = field(default_factory=FrameRange)
    file_format: str | None = None  # a Blender ``file_format`` such as "PNG"; None keeps the scene's
    overscan: int = 0
    strict: bool = False
    sample_chunks: int = 1  # each frame's samples are split over this many workers

    def __post_init__(self) -> None:
        """The checks the CLI makes, for every caller: the add-on and scripts use this API directly."""
        if not isinstance(self.tile, TileSize) or not isinstance(self.frames, FrameRange):
            raise BadInput("job settings need a TileSize and a FrameRange")
        if self.file_format is not None and self.file_format not in FORMATS.values():
            raise BadInput(f"output format {self.file_format!r} is not one the farm writes: use "
                           f"{' or '.join(FORMATS.values())}, or none for the scene's own")
        if not (_whole(self.overscan) and self.overscan >= 0):
            raise BadInput(f"overscan {self.overscan} must be a whole number of pixels, 0 or more")
        if not (_whole(self.sample_chunks) and self.sample_chunks >= 1):
            raise BadInput(f"sample chunks {self.sample_chunks} must be a whole number, 1 or more")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> JobSettings:
        return cls(
            tile=TileSize(**data.get("tile", {})),
            frames=FrameRange(**data.get("frames", {})),
            file_format=data.get("file_format"),
            overscan=int(data.get("overscan", 0)),
            strict=bool(data.get("strict", False)),
            sample_chunks=int(data.get("sample_chunks", 1)),
        )


@dataclass(frozen=True)
class Job:
    """A submitted job; ``name`` is the safe directory name, ``display_name`` what users see."""

    name: str
    display_name: str
    settings: JobSettings
    source_fingerprint: str = ""
    saved_with: tuple[int, ...] = ()  # Blender version that saved the user's file

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "settings": self.settings.to_json(),
            "source_fingerprint": self.source_fingerprint,
            "saved_with": list(self.saved_with),
        }

    @classmethod
    def from_json(cls, data: dict) -> Job:
        return cls(
            name=check_job_name(data["name"]),
            display_name=str(data.get("display_name", data["name"])),
            settings=JobSettings.from_json(data.get("settings", {})),
            source_fingerprint=str(data.get("source_fingerprint", "")),
            saved_with=tuple(int(v) for v in data.get("saved_with", ())),
        )

    @classmethod
    def load(cls, path: Path) -> Job:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


#: Blender's last frame (``MAXFRAME`` in DNA_scene_types.h); the first is its negative.
MAX_FRAME = 1048574


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


def job_name_for(display_name: str, identity: str) -> str:
    """A directory-safe, stable job name: an ASCII slug of the display name plus a short hash.

    The hash of ``identity`` (for example the blend's absolute path) keeps two
    scenes that slugify alike, such as ``shot 1.blend`` and ``shot_1.blend``, apart.
    """
    ascii_name = unicodedata.normalize("NFKD", display_name).encode("ascii", "ignore").decode()
    slug = _UNSAFE.sub("_", ascii_name).strip("._-")[:48] or "job"
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:8]
    return f"{slug}-{digest}"


def check_job_name(name: str) -> str:
    """Reject names that could escape a repo directory (``..``, ``/``, hidden files)."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise BadInput(f"job name {name!r} is not safe: use letters, digits, '.', '_' and '-' only")
    return name


def parse_tile(text: str) -> TileSize:
    """``64`` -> 64x64, ``96x48`` -> 96x48, ``auto`` -> chosen later; anything else is bad input."""
    if text.strip().lower() == "auto":
        return TileSize(auto=True)
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise BadInput(f"tile size {text!r} is not a number: use --tile 64, --tile 96x48 or --tile auto")
    sizes = [int(p) for p in parts]
    if min(sizes) <= 0:
        raise BadInput(f"tile size {text!r} must be greater than 0")
    return TileSize(sizes[0], sizes[-1])


def parse_frames(text: str | None, step: int | None = None) -> FrameRange:
    """``3`` or ``1-24``; negative frame numbers are allowed (``-5--1``). No ``step``: the scene's."""
    if step is not None and step <= 0:
        raise BadInput(f"frame step {step} must be 1 or more")
    if text is None:
        return FrameRange(step=step)
    match = re.fullmatch(r"\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?", text)
    if not match:
        raise BadInput(f"frame range {text!r} is not understood: use --frames 1-24 or --frames 7")
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) is not None else start
    return FrameRange(start, end, step)
