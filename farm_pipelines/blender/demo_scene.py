"""The project's own demo scene, built from code: animated, lit, with procedural materials.

``python -m farm_pipelines.blender.demo_scene OUT.blend [--size WxH] [--samples N] [--frames N]``
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import bpy

from farm_pipelines.atomic_files import atomic_path


def use_nodes(material: bpy.types.Material) -> None:
    if material.node_tree is None:  # Blender 4.5 makes materials without nodes; 5.0 always has them
        material.use_nodes = True


def _material(name: str, base: tuple[float, float, float], scale: float, roughness: float) -> bpy.types.Material:
    """A noise-driven two-tone material, so tiles have real texture detail to get wrong."""
    material = bpy.data.materials.new(name)
    use_nodes(material)
    nodes = material.node_tree.nodes
    links = material.node_tree.links
    shader = nodes["Principled BSDF"]
    noise = nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = scale
    ramp = nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].color = (*[c * 0.3 for c in base], 1.0)
    ramp.color_ramp.elements[1].color = (*base, 1.0)
    links.new(noise.outputs["Fac"], ramp.inputs["Fac"])
    links.new(ramp.outputs["Color"], shader.inputs["Base Color"])
    shader.inputs["Roughness"].default_value = roughness
    return material


def build(size: tuple[int, int] = (320, 180), samples: int = 16, frames: int = 3) -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.name = "Demo"
    render = scene.render
    render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.seed = 7
    render.resolution_x, render.resolution_y = size
    render.resolution_percentage = 100
    render.image_settings.file_format = "PNG"
    scene.frame_start, scene.frame_end = 1, frames

    bpy.ops.mesh.primitive_plane_add(size=20)
    bpy.context.object.data.materials.append(_material("Floor", (0.8, 0.75, 0.6), 6.0, 0.6))
    bpy.ops.mesh.primitive_uv_sphere_add(radius=1.0, location=(-1.6, 0, 1.0), segments=48, ring_count=24)
    bpy.ops.object.shade_smooth()
    sphere = bpy.context.object
    sphere.data.materials.append(_material("Sphere", (0.1, 0.35, 0.9), 12.0, 0.25))
    bpy.ops.mesh.primitive_monkey_add(location=(1.5, 0.3, 1.0), rotation=(0, 0, math.radians(-30)))
    bpy.ops.object.shade_smooth()
    monkey = bpy.context.object
    monkey.data.materials.append(_material("Monkey", (0.9, 0.3, 0.1), 20.0, 0.4))

    for frame, z in ((1, 1.0), (max(2, frames), 2.2)):  # the sphere bounces, the monkey turns
        sphere.location.z = z
        sphere.keyframe_insert("location", frame=frame)
        monkey.rotation_euler.z = math.radians(-30 + 40 * (frame - 1))
        monkey.keyframe_insert("rotation_euler", frame=frame)

    bpy.ops.object.light_add(type="AREA", location=(3, -3, 5))
    bpy.context.object.data.energy = 800
    bpy.context.object.data.size = 2
    bpy.ops.object.light_add(type="SUN", rotation=(math.radians(50), 0, math.radians(30)))
    bpy.context.object.data.energy = 2
    world = bpy.data.worlds.new("Sky")
    world.color = (0.05, 0.07, 0.1)
    scene.world = world

    bpy.ops.object.camera_add(location=(0, -7.5, 3.2), rotation=(math.radians(70), 0, 0))
    scene.camera = bpy.context.object
    return scene


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--frames", type=int, default=3)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    build((width, height), args.samples, args.frames)
    with atomic_path(args.out) as tmp:
        bpy.ops.wm.save_as_mainfile(filepath=str(tmp), copy=True)
    print(f"demo scene written to {args.out}")


if __name__ == "__main__":
    main()
