"""Cycles' GPUs: list what this machine has, and make a scene that asks for a GPU render on one.

A scene's ``cycles.device = "GPU"`` only asks; Cycles renders on the devices of the
*preferences* (``compute_device_type`` and each device's ``use``), and a farm
process starts with factory preferences, where the device type is NONE. So a GPU
scene would silently render on the CPU unless the worker picks a backend, refreshes
Cycles' device list and enables the devices itself. The choice is ``gpu.choose``.

Run as ``python -m farm_pipelines.blender.devices RESULT_JSON`` it writes what Cycles
finds (``{backend: [device, ...]}``): the local farm's probe, and ``bench/gpu.py``'s.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import bpy

from farm_pipelines import gpu
from farm_pipelines.atomic_files import write_text
from farm_pipelines.blender import entry


def _preferences() -> bpy.types.AddonPreferences:
    return bpy.context.preferences.addons["cycles"].preferences


def available() -> dict[str, list[gpu.Device]]:
    """The GPUs of each backend this Blender was built with, as Cycles enumerates them now.

    ``_cycles.available_devices`` asks the drivers; Blender does not do it at start
    (it can crash on some drivers), which is also why the farm asks only in workers and
    in a probe process of its own.
    """
    import _cycles

    found: dict[str, list[gpu.Device]] = {}
    built = {item[0] for item in _preferences().get_device_types(bpy.context)}
    for backend in gpu.BACKENDS:
        if backend not in built:
            continue
        found[backend] = [gpu.Device(backend, name, device_id)
                          for name, kind, device_id, *_ in _cycles.available_devices(backend) if kind == backend]
    return found


def asks_for_gpu(scene: bpy.types.Scene) -> bool:
    return scene.render.engine == "CYCLES" and scene.cycles.device == "GPU"


def use_devices(scene: bpy.types.Scene, choice: gpu.Choice) -> None:
    """Render ``scene`` on ``choice``: its backend and only its devices, or the CPU.

    Only the chosen devices are enabled, the CPU entry included off: on a GPU worker
    the farm's CPU workers have the remaining cores, and a frame never mixes devices.
    """
    preferences = _preferences()
    if choice.backend is None:
        scene.cycles.device = "CPU"
        return
    preferences.compute_device_type = choice.backend
    preferences.refresh_devices()
    wanted = {device.id for device in choice.devices}
    for entry_ in preferences.devices:
        entry_.use = entry_.type == choice.backend and entry_.id in wanted
    scene.cycles.device = "GPU"


def main() -> None:
    result = Path(sys.argv[-1])
    write_text(result, json.dumps({backend: [d.to_json() for d in devices]
                                   for backend, devices in available().items()}))


if __name__ == "__main__":
    entry.run(main)
