"""Add-on preferences: where the Pachyderm cluster is, how to authenticate, local farm defaults.

The auth token lives here, in Blender's user preferences, never on a scene, so it
is never written into a .blend file.
"""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty
from bpy.types import AddonPreferences

from .properties import TILE_PRESET_ITEMS


class FarmPreferences(AddonPreferences):
    bl_idname = __package__

    address: StringProperty(
        name="Pachyderm Address", default="localhost:30650",
        description="host:port of pachd, or a grpc:// or grpcs:// URL; empty uses the active pachctl context")
    token: StringProperty(
        name="Auth Token", subtype="PASSWORD",
        description="Pachyderm auth token; kept in Blender's preferences, never in .blend files")
    use_tls: BoolProperty(name="TLS", description="Connect to pachd over TLS")
    default_tile: EnumProperty(name="Default Tile Size", items=TILE_PRESET_ITEMS, default="CPU_64")
    local_workers: IntProperty(
        name="Local Workers", default=0, min=0, max=256,
        description="Render processes of the local farm; 0 uses one per CPU core")
    gpu_backend: EnumProperty(
        name="GPU Backend", default="BLENDER",
        description="What the local farm's workers render GPU scenes with (a scene set to CPU stays on the CPU)",
        items=[("BLENDER", "As in Blender", "The backend chosen in Preferences > System > Cycles Render Devices; "
                                            "automatic if that is None"),
               ("AUTO", "Automatic", "The first of OptiX, CUDA, HIP, oneAPI and Metal that has a GPU here"),
               ("OPTIX", "OptiX", "NVIDIA RTX and GTX 16xx and newer"), ("CUDA", "CUDA", "NVIDIA"),
               ("HIP", "HIP", "AMD"), ("ONEAPI", "oneAPI", "Intel Arc"), ("METAL", "Metal", "Apple"),
               ("CPU", "CPU Only", "Never use a GPU")])

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.use_property_split = True
        pachyderm = layout.column(heading="Pachyderm")
        pachyderm.prop(self, "address")
        pachyderm.prop(self, "token")
        pachyderm.prop(self, "use_tls")
        local = layout.column(heading="Local Farm")
        local.prop(self, "local_workers")
        local.prop(self, "gpu_backend")
        layout.prop(self, "default_tile")


def get(context: bpy.types.Context) -> FarmPreferences:
    return context.preferences.addons[__package__].preferences


def gpu_backend(context: bpy.types.Context) -> str:
    """The local farm's backend setting (``farm_pipelines.gpu.parse_backend``) from these preferences.

    "As in Blender" reads the user's own Cycles device type: farm workers start from factory
    preferences, so without this a user's OptiX choice would not reach them.
    """
    chosen = get(context).gpu_backend
    if chosen != "BLENDER":
        return chosen.lower() if chosen == "AUTO" else chosen
    cycles = context.preferences.addons.get("cycles")
    device_type = getattr(cycles.preferences, "compute_device_type", "NONE") if cycles else "NONE"
    return "auto" if device_type in ("", "NONE") else device_type


def register() -> None:
    bpy.utils.register_class(FarmPreferences)


def unregister() -> None:
    bpy.utils.unregister_class(FarmPreferences)
