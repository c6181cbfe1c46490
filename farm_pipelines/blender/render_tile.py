"""Render one tile of one frame to a float OpenEXR, keeping the blend loaded between tiles.

The loaded blend is found by content hash, not by file: on Pachyderm every datum
gets a fresh copy of its inputs (a new inode each time), or with a ``lazy`` input a
named pipe, so only the hash the splitter recorded says two tiles share a blend
(``farm_pipelines.blend_cache``).

A frame that is one piece renders as the scene says (its compositor and denoiser
included) to RGBA. A frame split into tiles or sample chunks renders each piece
to multilayer OpenEXR with every view layer and pass, compositing off and, if the
scene denoises, Cycles' denoiser off but its denoising data passes on: the merger
composites and denoises the whole frame once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import bpy

from farm_pipelines import blend_cache, blender_versions, gpu, merge
from farm_pipelines.atomic_files import atomic_path, write_text
from farm_pipelines.blender import animation_hold, compositor, devices, session
from farm_pipelines.errors import FarmFailure
from farm_pipelines.manifest import SampleChunk, TileSpec
from farm_pipelines.tiles import border_for_box


class TileRenderer:
    """Holds one open blend; a worker process reuses it for every tile of the same blend content."""

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        self._loaded: str | None = None  # the sha256 of the open blend
        self.loads = 0  # blends opened by this process; each one is logged
        self.scene: bpy.types.Scene | None = None
        self._held = animation_hold.HeldAnimation()
        self._found: dict[str, list[gpu.Device]] | None = None  # Cycles' GPUs, listed once per process
        self.device = ""  # what the open scene renders on, as logged

    def load(self, blend: Path, saved_with: tuple[int, ...] = (), sha256: str | None = None) -> bpy.types.Scene:
        """Open ``blend`` unless the blend with content ``sha256`` is open already; then ``blend`` is not read.

        Without ``sha256`` (a tile cut before the splitter recorded it) the file is hashed.
        """
        if sha256 is None or sha256 != self._loaded:
            path, sha256 = blend_cache.local_blend(blend, sha256)
        if sha256 != self._loaded:
            check_version(saved_with)
            self.scene = session.open_untrusted(path)
            self.loads += 1
            print(f"renderer: loaded blend {sha256[:12]} (load {self.loads} of this process)", flush=True)
            self._frame: int | None = None
            self._held = animation_hold.HeldAnimation()  # the old file's data is gone
            self._output: tuple | None = None
            self._configure(self.scene)
            self._loaded = sha256
        return self.scene

    def _configure(self, scene: bpy.types.Scene) -> None:
        render = scene.render
        if self.threads > 0:
            render.threads_mode = "FIXED"
            render.threads = self.threads
        cycles = scene.cycles
        self._scene_settings = (render.use_compositing, cycles.use_denoising, cycles.use_adaptive_sampling)
        self._denoises = render.engine == "CYCLES" and cycles.use_denoising
        render.use_persistent_data = True  # Cycles keeps the BVH between tiles
        render.use_stamp = False  # burn-in belongs on the whole frame, added by the merger
        for name in compositor.mute_file_outputs(scene):
            print(f"warning: File Output node {name!r} switched off: the farm writes only the job's frames",
                  file=sys.stderr, flush=True)
        self._choose_device(scene)

    def _choose_device(self, scene: bpy.types.Scene) -> None:
        """Put a scene that asks for a GPU on this worker's GPU, or on its CPU with a warning naming why.

        The warning goes to the log (on Pachyderm, ``pachctl logs``) and, on the local
        farm, into the device report the farm turns into a message for the user.
        """
        warning = ""
        if devices.asks_for_gpu(scene):
            if self._found is None:
                self._found = devices.available()
            setting = gpu.backend_setting()
            choice = gpu.choose(setting, self._found, os.environ.get(gpu.DEVICE_ENV) or None)
            devices.use_devices(scene, choice)
            if choice.backend is None and setting != "CPU":  # CPU by the farm's own choice is no surprise
                warning = f"the scene asks for GPU rendering, but {choice.reason}: rendering on the CPU"
        else:
            choice = gpu.Choice(None, reason="the scene renders on the CPU")
        self.device = choice.describe()
        print(f"renderer: device: {self.device}", flush=True)
        if warning:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        report = os.environ.get(gpu.REPORT_ENV)
        if report:
            write_text(Path(report), json.dumps({"device": self.device, "gpu": choice.backend is not None,
                                                 "warning": warning}))

    def _set_output(self, scene: bpy.types.Scene, farm_composites: bool, chunk: SampleChunk | None) -> None:
        render, cycles = scene.render, scene.cycles
        compositing, denoising, adaptive = self._scene_settings
        render.use_compositing = compositing and not farm_composites
        cycles.use_denoising = denoising and not farm_composites
        for layer in scene.view_layers:
            layer.cycles.denoising_store_passes |= self._denoises and farm_composites
        # Adaptive sampling stops each pixel on its own chunk's noise, leaving unknown sample
        # counts to weight the chunks by; a chunked frame takes every sample everywhere.
        cycles.use_adaptive_sampling = adaptive and chunk is None
        cycles.use_sample_subset = chunk is not None
        if chunk is not None:
            cycles.sample_offset, cycles.sample_subset_length = chunk.offset, chunk.samples
        settings = render.image_settings
        if hasattr(settings, "media_type"):  # Blender 5.0 picks multilayer EXR by media type first
            settings.media_type = "MULTI_LAYER_IMAGE" if farm_composites else "IMAGE"
        settings.file_format = "OPEN_EXR_MULTILAYER" if farm_composites else "OPEN_EXR"
        settings.color_mode = "RGBA"
        settings.color_depth = "32"
        settings.exr_codec = "ZIP"

    def render(self, frame: int, tile: TileSpec, frame_size: tuple[int, int], out_path: Path,
               farm_composites: bool = False, chunk: SampleChunk | None = None) -> None:
        scene = self.scene
        render = scene.render
        width, height = frame_size
        box = tile.render_box
        whole = box.x0 == 0 and box.y0 == 0 and box.x1 == width and box.y1 == height
        render.use_border = not whole
        render.use_crop_to_border = True
        render.border_min_x, render.border_min_y, render.border_max_x, render.border_max_y = (
            border_for_box(box, width, height))
        # Compositing a fragment is wrong (blur, glare, denoise see tile edges); the merger does it.
        if (farm_composites, chunk) != self._output:  # each setting runs Cycles' update callbacks
            self._set_output(scene, farm_composites, chunk)
            self._output = (farm_composites, chunk)
        if frame != self._frame:  # re-evaluating an unchanged frame costs more than a small tile
            self._held.release()
            scene.frame_set(frame)
            self._held = animation_hold.hold(scene)
            self._frame = frame
        with atomic_path(out_path) as tmp:
            render.filepath = str(tmp)
            bpy.ops.render.render(write_still=True, scene=scene.name)
            # Blender reports a failed write (a full disk) but can leave a short file behind.
            if merge.read_layers(tmp) is None:
                raise FarmFailure(f"Blender wrote no readable image for frame {frame} tile {tile.index} "
                                  f"(is the disk full?)")


def check_version(saved_with: tuple[int, ...]) -> None:
    """Refuse a job saved by a newer Blender: an older one may load it wrongly and silently.

    On Pachyderm, submissions trust the version ``farm deploy`` wrote into the pipelines;
    a worker whose own Blender differs from it says so, so that claim cannot lie for long.
    """
    mine = tuple(bpy.app.version[:2])
    claimed = os.environ.get(blender_versions.WORKER_VERSION_ENV)
    if claimed and blender_versions.parse(claimed)[:2] != mine:
        actual = bpy.app.version_string.split()[0]
        raise FarmFailure(f"the pipelines were deployed for Blender {claimed}, but this worker image runs Blender "
                          f"{actual}; run `farm deploy --image ... --blender-version {actual} --apply` again")
    if not saved_with:
        return
    theirs = tuple(saved_with[:2])
    shown = ".".join(str(v) for v in saved_with)
    if mine < theirs:
        raise FarmFailure(f"this worker runs Blender {bpy.app.version_string}, older than the {shown} "
                          f"the scene was saved with; upgrade the worker's Blender")
    if mine > theirs:
        print(f"warning: scene saved with Blender {shown}, rendering with {bpy.app.version_string}",
              file=sys.stderr, flush=True)
