"""Which GPU a worker renders on, and how a farm's workers and frames are shared between GPUs and CPUs.

Plain Python: the Blender side (``farm_pipelines.blender.devices``) lists what Cycles
finds and applies the choice made here. Nothing in this project has run on a GPU: the
machines it is tested on have none, so the tests cover the choice, the fallback and
the layouts, and ``bench/gpu.py`` is the check for a machine that has one.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from farm_pipelines.errors import BadInput

#: The Cycles backends, in the order ``auto`` tries them: OptiX is CUDA plus NVIDIA's RT cores.
BACKENDS = ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL")
#: The farm setting: ``auto`` (default), one of ``BACKENDS``, or ``CPU`` to never use a GPU.
BACKEND_ENV = "FARM_GPU_BACKEND"
#: Set by the local farm on a GPU worker: the Cycles id of the one device it renders on.
DEVICE_ENV = "FARM_GPU_DEVICE"
#: Set by the local farm: where a renderer writes the device it renders on (``DeviceReport``).
REPORT_ENV = "FARM_DEVICE_REPORT"
#: CPUs a GPU worker keeps to feed its GPU (scene sync, BVH build, the tile's file).
FEED_CPUS = 2
#: What ``--tile auto`` assumes a GPU worker renders in the time a one-CPU worker renders one tile.
#: An assumption, not a measurement (no GPU here; ``bench/gpu.py`` prints the real ratio): a desktop
#: GPU commonly renders Cycles several times faster than a whole multi-core CPU, so 8 single-core
#: workers' worth is conservative, and errs toward smaller tiles.
GPU_SPEED = 8.0


@dataclass(frozen=True)
class Device:
    """One GPU as Cycles lists it: ``(name, type, id)`` of ``_cycles.available_devices``."""

    backend: str
    name: str
    id: str

    def to_json(self) -> dict:
        return {"backend": self.backend, "name": self.name, "id": self.id}

    @classmethod
    def from_json(cls, data: dict) -> Device:
        return cls(data["backend"], data["name"], data["id"])


@dataclass(frozen=True)
class Choice:
    """The backend and devices to render on; ``backend`` None means the CPU, ``reason`` says why."""

    backend: str | None
    devices: tuple[Device, ...] = ()
    reason: str = ""

    def describe(self) -> str:
        """``OPTIX NVIDIA GeForce RTX 4070``, or ``CPU (why)``."""
        if self.backend is None:
            return f"CPU ({self.reason})" if self.reason else "CPU"
        return " + ".join(f"{self.backend} {device.name}" for device in self.devices)


def parse_backend(text: str | None) -> str:
    """``auto``, a backend or ``CPU``, case-insensitive; anything else is bad input."""
    value = (text or "auto").strip()
    if value.lower() == "auto":
        return "auto"
    if value.upper() in (*BACKENDS, "CPU"):
        return value.upper()
    raise BadInput(f"GPU backend {value!r} is not one of auto, {', '.join(BACKENDS)} or CPU; "
                   f"fix --gpu-backend or {BACKEND_ENV}")


def backend_setting() -> str:
    return parse_backend(os.environ.get(BACKEND_ENV))


def choose(setting: str, found: dict[str, list[Device]], pinned: str | None = None) -> Choice:
    """The devices a worker renders on, given what Cycles found per backend.

    ``auto`` takes the first backend of ``BACKENDS`` that has a device; a named one
    only that backend. ``pinned`` (a Cycles device id) keeps the one device the
    local farm gave this worker. Every CPU fallback carries the reason, which the
    worker prints as a warning: a GPU scene must never go to the CPU silently.
    """
    if setting == "CPU":
        return Choice(None, reason="the GPU backend is set to CPU")
    tried = BACKENDS if setting == "auto" else (setting,)
    for backend in tried:
        devices = [d for d in found.get(backend, []) if pinned is None or d.id == pinned]
        if devices:
            return Choice(backend, tuple(devices))
    where = f" with id {pinned!r}" if pinned else ""
    return Choice(None, reason=f"Cycles found no {' or '.join(tried)} device{where} here")


@dataclass(frozen=True)
class WorkerPlan:
    """One local worker: its CPUs and, for a GPU worker, the one GPU it renders on."""

    cpus: frozenset[int]
    gpu: Device | None = None

    @property
    def kind(self) -> str:
        return "gpu" if self.gpu else "cpu"


def plan_workers(cpus: list[int], gpus: list[Device], workers: int | None = None) -> list[WorkerPlan]:
    """One worker per GPU with ``FEED_CPUS`` of its own, and CPU workers on the remaining cores.

    ``workers`` caps the total; GPU workers come first, being the fast ones. With more
    workers than CPUs left, CPU workers share them (``workers.cpu_sets`` does the same).
    """
    gpus = gpus[:workers] if workers else list(gpus)
    feed = FEED_CPUS if len(cpus) >= FEED_CPUS * len(gpus) + 1 else 1
    plans: list[WorkerPlan] = []
    for index, gpu in enumerate(gpus):
        own = [cpus[(index * feed + k) % len(cpus)] for k in range(feed)]
        plans.append(WorkerPlan(frozenset(own), gpu))
    rest = cpus[len(gpus) * feed:]
    count = (workers - len(gpus)) if workers else len(rest)
    if count <= 0 and rest and plans:  # no CPU workers: the GPU workers keep every CPU (a CPU scene uses them)
        for index, cpu in enumerate(rest):
            plan = plans[index % len(plans)]
            plans[index % len(plans)] = WorkerPlan(plan.cpus | {cpu}, plan.gpu)
        return plans
    if count > 0:
        rest = rest or cpus
        for index in range(count):
            if count <= len(rest):
                share = rest[index * len(rest) // count:(index + 1) * len(rest) // count]
            else:
                share = [rest[index % len(rest)]]
            plans.append(WorkerPlan(frozenset(share)))
    return plans


def may_have_gpu() -> bool:
    """A cheap look for GPU device files before starting Blender to ask Cycles.

    Linux exposes NVIDIA GPUs as ``/dev/nvidia0``..., AMD's ROCm as ``/dev/kfd``,
    Intel's Level Zero through ``/dev/dri/renderD*`` and WSL2 all of them through
    ``/dev/dxg``; a Mac with Apple silicon always
    has Metal. Elsewhere (Windows) only Cycles can tell, so it is asked.
    """
    system = platform.system()
    if system == "Darwin":
        return platform.machine() == "arm64"
    if system != "Linux":
        return True
    dev = Path("/dev")
    return (any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists() or any(dev.glob("dri/renderD*"))
            or (dev / "dxg").exists())  # WSL2 passes GPUs through /dev/dxg


#: Frames are shared between a cluster's CPU and GPU renderers by their last digit (``frame_digits``).
DIGITS = "0123456789"


def frame_digits(gpu_share: float) -> tuple[str, str]:
    """(GPU digits, CPU digits): the GPU renderer takes frames whose number ends in one of its digits.

    A whole frame goes to one kind of device, so no frame mixes CPU and GPU tiles
    (their floating point differs; see the README). The share is rounded to tenths,
    and interleaving the digits keeps each renderer's frames spread over the shot.
    """
    if not 0 < gpu_share < 1:
        raise BadInput(f"--gpu-share {gpu_share} must be between 0 and 1 (the GPU renderer's share of frames)")
    count = min(9, max(1, round(gpu_share * 10)))
    order = "0516273849"  # every prefix is spread over 0-9
    gpu = "".join(sorted(order[:count]))
    return gpu, "".join(d for d in DIGITS if d not in gpu)


def tile_glob(digits: str) -> str:
    """The splitter glob of the tiles of frames ending in ``digits``.

    Tiles are ``/<job>/tiles/<frame:06d>_<piece>.json``; the five ``?`` pin the digit to
    the frame's sixth character, since a piece name holds digits and ``_`` too. Frames
    of seven digits (1000000 and up) match neither renderer and fail by name in the merger.
    """
    return f"/(*)/tiles/?????[{digits}]_*"
