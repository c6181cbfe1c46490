"""Build small test scenes in a separate bpy process: ``python tests/scene_builder.py OUT.blend JSON``.

Options (all optional): size [w, h], percentage, samples, frames [start, end],
border [min_x, min_y, max_x, max_y], crop, dither, camera (bool), color [r, g, b],
text_block_writes (a path a registered text block would create on load),
animate (a list of "material", "light", "nla": more kinds of animation), motion_blur (bool).
"""

from __future__ import annotations

import json
import sys

import bpy


def build(options: dict) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    render = scene.render
    render.engine = "CYCLES"
    scene.cycles.device = options.get("device", "CPU")
    scene.cycles.samples = options.get("samples", 2)
    scene.cycles.use_denoising = False
    scene.cycles.seed = 3
    render.resolution_x, render.resolution_y = options.get("size", [64, 48])
    render.resolution_percentage = options.get("percentage", 100)
    render.dither_intensity = options.get("dither", 1.0)
    render.image_settings.file_format = "PNG"
    scene.frame_start, scene.frame_end = options.get("frames", [1, 2])
    scene.frame_step = options.get("frame_step", 1)
    if "border" in options:
        render.use_border = True
        render.border_min_x, render.border_min_y, render.border_max_x, render.border_max_y = options["border"]
        render.use_crop_to_border = options.get("crop", False)

    material = bpy.data.materials.new("Noise")
    use_nodes(material)
    nodes = material.node_tree.nodes
    noise = nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 8.0
    material.node_tree.links.new(noise.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"])
    bpy.ops.mesh.primitive_plane_add(size=10)
    bpy.context.object.data.materials.append(material)
    bpy.ops.mesh.primitive_uv_sphere_add(radius=1, location=(0, 0, 1))
    sphere = bpy.context.object
    tint = bpy.data.materials.new("Tint")
    use_nodes(tint)
    color = options.get("color", [0.8, 0.2, 0.1])
    tint.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (*color, 1)
    sphere.data.materials.append(tint)
    sphere.keyframe_insert("location", frame=scene.frame_start)
    sphere.location.x = 1.5
    sphere.keyframe_insert("location", frame=scene.frame_end)
    bpy.ops.object.light_add(type="POINT", location=(2, -2, 4))
    light = bpy.context.object.data
    light.energy = 600
    _animate(scene, options.get("animate", []), tint, light)
    render.use_motion_blur = options.get("motion_blur", False)
    if options.get("camera", True):
        bpy.ops.object.camera_add(location=(0, -6, 3), rotation=(1.2, 0, 0))
        scene.camera = bpy.context.object
    world = bpy.data.worlds.new("World")
    world.color = (0.1, 0.1, 0.12)
    scene.world = world
    if "text_block_writes" in options:
        text = bpy.data.texts.new("register_me.py")
        text.write(f"open({options['text_block_writes']!r}, 'w').write('ran')\n")
        text.use_module = True  # "Register": runs on load when scripts are allowed


def use_nodes(material: bpy.types.Material) -> None:
    if material.node_tree is None:  # Blender 4.5 makes materials without nodes; 5.0 always has them
        material.use_nodes = True


def _animate(scene: bpy.types.Scene, kinds: list[str], tint: bpy.types.Material, light: bpy.types.Light) -> None:
    first, last = scene.frame_start, scene.frame_end
    if "material" in kinds:  # an embedded node tree's own animation
        color = tint.node_tree.nodes["Principled BSDF"].inputs["Base Color"]
        color.keyframe_insert("default_value", frame=first)
        color.default_value = (0.1, 0.7, 0.3, 1)
        color.keyframe_insert("default_value", frame=last)
    if "light" in kinds:  # object data's animation
        light.keyframe_insert("energy", frame=first)
        light.energy = 150
        light.keyframe_insert("energy", frame=last)
    if "nla" in kinds:  # a cube whose motion comes from an NLA strip under its action
        bpy.ops.mesh.primitive_cube_add(size=0.6, location=(-2, 0, 0.3))
        cube = bpy.context.object
        cube.keyframe_insert("location", frame=first)
        cube.location.y = 1.5
        cube.keyframe_insert("location", frame=last)
        track = cube.animation_data.nla_tracks.new()
        track.strips.new("Slide", first, cube.animation_data.action)
        cube.animation_data.action = None  # the turn below gets an action of its own, over the strip
        cube.rotation_euler.z = 0.0
        cube.keyframe_insert("rotation_euler", index=2, frame=first)
        cube.rotation_euler.z = 1.2
        cube.keyframe_insert("rotation_euler", index=2, frame=last)


def main() -> None:
    out, options = sys.argv[-2], json.loads(sys.argv[-1])
    build(options)
    bpy.ops.wm.save_as_mainfile(filepath=out)


if __name__ == "__main__":
    main()
