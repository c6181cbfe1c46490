"""Stitch a frame from its tiles by pixel offset, in float, and say exactly what is wrong if it can't.

Tiles are found through the frame manifest, never by sorting file names.
Arrays are top-row-first (as OpenCV and image files store them) while tile boxes
are in Blender's bottom-up coordinates; the conversion lives here only.

Frames the farm composites arrive as multilayer OpenEXR pieces (every view layer
and pass, one channel per array): sample chunks of a tile are averaged by sample
count, then every channel is stitched, and the result is written back as one
multilayer file for Blender's compositor.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import OpenEXR

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
import cv2  # noqa: E402  (the EXR switch must be set before import)

from farm_pipelines.errors import FarmFailure  # noqa: E402
from farm_pipelines.manifest import FrameManifest, SampleChunk, TileSpec  # noqa: E402

T = TypeVar("T")


class FrameIncomplete(FarmFailure):
    """Some tiles of a frame are missing or the wrong size; the message names them."""


def read_exr(path: Path) -> np.ndarray | None:
    """An RGBA float32 array, top row first, or None if the file is missing or unreadable."""
    if not Path(path).is_file():
        return None
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 3 or image.shape[2] not in (3, 4):
        return None
    code = cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGBA
    return cv2.cvtColor(image.astype(np.float32, copy=False), code)


def write_exr(path: Path, rgba: np.ndarray) -> None:
    """Write float32 RGBA losslessly (ZIP), for Blender to pick up."""
    params = [cv2.IMWRITE_EXR_TYPE, cv2.IMWRITE_EXR_TYPE_FLOAT, cv2.IMWRITE_EXR_COMPRESSION,
              cv2.IMWRITE_EXR_COMPRESSION_ZIP]
    if not cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), params):
        raise OSError(f"could not write {path}")


def stitch(manifest: FrameManifest, tile_dir: Path, readers: int = 1) -> np.ndarray:
    """The frame's canvas, assembled from ``tile_dir/<index>.exr``; areas outside the region stay 0.

    ``readers`` threads read tiles at once (see ``_load_all``)."""

    def load(tile: TileSpec) -> tuple[dict[str, np.ndarray] | None, str]:
        pixels = read_exr(Path(tile_dir) / f"{manifest.piece_name(tile, None)}.exr")
        return (None, "missing or unreadable") if pixels is None else ({"RGBA": pixels}, "")

    return _assemble(manifest, load, readers)["RGBA"]


def stitch_layers(manifest: FrameManifest, tile_dir: Path, readers: int = 1) -> dict[str, np.ndarray]:
    """Every channel of the frame, from ``tile_dir/<piece>.exr`` multilayer pieces, chunks merged."""

    def load(tile: TileSpec) -> tuple[dict[str, np.ndarray] | None, str]:
        chunks = manifest.chunks or (None,)
        pieces = [(chunk, read_layers(Path(tile_dir) / f"{manifest.piece_name(tile, chunk)}.exr"))
                  for chunk in chunks]
        bad = [manifest.piece_name(tile, chunk) for chunk, layers in pieces if layers is None]
        if bad:
            return None, f"piece(s) {', '.join(bad)} missing or unreadable"
        if len({(tuple(sorted(layers)), _shape(layers)) for _, layers in pieces}) > 1:
            return None, "sample chunks differ in passes or size"
        return merge_chunks(pieces), ""

    return _assemble(manifest, load, readers)


def merge_chunks(pieces: list[tuple[SampleChunk | None, dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """One tile from its sample chunks: the mean weighted by sample count, as one render would
    have accumulated it. Depth is the nearest hit of any sample, so it takes the minimum."""
    if len(pieces) == 1:
        return pieces[0][1]
    total = sum(chunk.samples for chunk, _ in pieces)
    merged = {}
    for name in pieces[0][1]:
        if name.split(".")[-2:-1] == ["Depth"]:
            merged[name] = np.minimum.reduce([layers[name] for _, layers in pieces])
        else:
            weighted = sum(chunk.samples * layers[name].astype(np.float64) for chunk, layers in pieces)
            merged[name] = (weighted / total).astype(np.float32)
    return merged


def _shape(layers: dict[str, np.ndarray]) -> tuple[int, ...]:
    return next(iter(layers.values())).shape[:2] if layers else ()


def _assemble(manifest: FrameManifest, load: Callable[[TileSpec], tuple[dict[str, np.ndarray] | None, str]],
              readers: int) -> dict[str, np.ndarray]:
    """Place each tile's arrays at its offset, cropping overscan; areas outside the region stay 0."""
    width, height = manifest.canvas_size
    origin_x, origin_y = manifest.canvas_origin
    canvas: dict[str, np.ndarray] = {}
    problems: list[str] = []
    for tile, (layers, problem) in zip(manifest.tiles, _load_all(load, manifest.tiles, readers), strict=True):
        rendered = tile.render_box
        name = f"tile {tile.index} {tile.box.as_list()}"
        if layers is None:
            problems.append(f"{name} {problem}")
            continue
        shape = _shape(layers)
        if shape != (rendered.height, rendered.width):
            found = f"{shape[1]}x{shape[0]}" if shape else "empty"
            problems.append(f"{name} is {found}, expected {rendered.width}x{rendered.height}")
            continue
        # Crop overscan: offsets of the tile inside what was rendered, converted to top-down rows.
        left = tile.box.x0 - rendered.x0
        top = rendered.y1 - tile.box.y1
        x0 = tile.box.x0 - origin_x
        row0 = height - (tile.box.y1 - origin_y)
        for channel, pixels in layers.items():
            target = canvas.setdefault(channel, np.zeros((height, width, *pixels.shape[2:]), np.float32))
            target[row0:row0 + tile.box.height, x0:x0 + tile.box.width] = \
                pixels[top:top + tile.box.height, left:left + tile.box.width]
    if problems:
        raise FrameIncomplete(f"frame {manifest.frame}: {_summary(problems, len(manifest.tiles))}")
    return canvas


def _load_all(load: Callable[[TileSpec], T], tiles: list[TileSpec], readers: int,
              window: int = 64) -> Iterator[T]:
    """``load`` each tile, in order, ``readers`` at a time.

    The merger runs once the renderers are done, with its worker's CPUs to itself,
    and reading a frame of small tiles is most of its work. OpenCV decodes without
    the GIL (OpenEXR's bindings keep it, so multilayer pieces gain less). At most
    ``window`` tiles are held at once.
    """
    with ThreadPoolExecutor(max_workers=max(1, readers)) as pool:
        for start in range(0, len(tiles), window):
            yield from pool.map(load, tiles[start:start + window])


def _summary(problems: list[str], tiles: int, shown: int = 5) -> str:
    """The first few problems in full; a frame of 900 missing tiles must still be one readable line."""
    if len(problems) <= shown:
        return "; ".join(problems)
    return (f"{len(problems)} of {tiles} tiles are bad: " + "; ".join(problems[:shown])
            + f"; and {len(problems) - shown} more")


def read_layers(path: Path) -> dict[str, np.ndarray] | None:
    """Every channel of a (multi-part, multilayer) OpenEXR by full name, e.g. ``ViewLayer.Combined.R``,
    top row first; None if the file is missing or unreadable."""
    if not Path(path).is_file():
        return None
    try:
        parts = OpenEXR.File(str(path), separate_channels=True).parts
    except RuntimeError:
        return None
    return {name: channel.pixels.astype(np.float32, copy=False)
            for part in parts for name, channel in part.channels.items()}


def write_layers(path: Path, channels: dict[str, np.ndarray]) -> None:
    """One single-part multilayer OpenEXR (float, ZIP): Blender reads it as layers and passes."""
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, channels).write(str(path))


def as_plain_multilayer(path: Path, passes: dict[str, np.ndarray], composite_into: str | None) -> None:
    """Rewrite, in place, Blender's multilayer EXR of a stitched frame as a plain render writes it.

    The farm's encode renders nothing: Blender names the compositor's result layer ``Composite``
    and writes the view layers as zeros, without most of their passes. A plain render writes
    every pass of each view layer, and ``Composite`` only when the scene composites. So the
    view layers are ``passes`` (the stitched pieces' channels the scene renders, by full name);
    ``composite_into`` names the view layer whose Combined is the farm's result instead (a scene
    that does not composite: the farm's tree is then that layer's Combined, denoised as Cycles
    would) and drops ``Composite``. A channel keeps the type Blender wrote it in (depth is
    always float), the file Blender's metadata, which it writes into the first part.
    """
    parts = OpenEXR.File(str(path), separate_channels=True).parts
    written = {name: channel.pixels for part in parts for name, channel in part.channels.items()}
    result = {name[len("Composite."):]: pixels for name, pixels in written.items() if name.startswith("Composite.")}
    channels = dict(passes) if composite_into else {**{f"Composite.{n}": p for n, p in result.items()}, **passes}
    if composite_into:
        channels.update({f"{composite_into}.{name}": pixels for name, pixels in result.items()})
    colour = next(iter(result.values())).dtype if result else np.float32
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for name, pixels in channels.items():
        group = name.rpartition(".")[0]  # "ViewLayer.Depth.Z" -> part "ViewLayer.Depth"
        kind = written[name].dtype if name in written else np.float32 if group.endswith(".Depth") else colour
        grouped.setdefault(group, {})[name] = pixels.astype(kind, copy=False)
    first = {key: value for key, value in parts[0].header.items() if key not in ("channels", "chunkCount", "name")}
    rest = {key: first[key] for key in _PART_LAYOUT if key in first}
    # The part's name goes in its header too: OpenEXR drops the argument once a header has a data window.
    OpenEXR.File([OpenEXR.Part({**(first if index == 0 else rest), "name": group}, layer, group)
                  for index, (group, layer) in enumerate(grouped.items())]).write(str(path))


#: The header entries every part of a multilayer file has; the rest is the file's metadata.
_PART_LAYOUT = ("compression", "dataWindow", "displayWindow", "lineOrder", "pixelAspectRatio",
                "screenWindowCenter", "screenWindowWidth", "type", "colorInteropID")
