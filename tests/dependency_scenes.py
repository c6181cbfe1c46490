"""Scenes whose look depends on files beside them: ``python tests/dependency_scenes.py KIND HOME``.

Writes ``HOME/scene.blend`` and the files it uses, all made here with Blender:

* ``textures``: an image sequence as an animated texture (frame N shows image N, each
  image another colour), a movie written by Blender's own FFMPEG output, and a UDIM set;
* ``caches``: an OpenVDB volume (a mesh-to-volume bake's .vdb, loaded as a Volume), an
  Alembic cache exported from Blender and imported back, and a simulation-nodes bake;
* ``particles``: a particle system baked to a disk cache;
* ``libraries``: two linked libraries, each with a texture of its own;
* ``hazards``: paths that must not be carried as they are: a folder, ``/dev/zero`` and a named
  pipe as images (the test makes ``pipe.png``), a ``####`` sequence path, node bakes at ``/``,
  the home folder and the scene's own folder; a library without the .blend suffix, one the
  test truncates, and one whose node bake is saved in it; an image from outside the folder;
* ``bakes``: two node bakes of one modifier, the second with a custom folder, beside a bake
  never baked and a particle disk cache never baked;
* ``foreign_paths``: paths as Windows saves them (``//tex\\wood.png``, ``C:\\Users\\...``), and an
  absolute one whose file is here.

Every object shows its file's content in emission, against a grey world, on frames 1-3
(32x24 px), so a missing or wrong file changes pixels a test can see.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import bpy

FRAMES = (1, 3)
SEQUENCE_COLOURS = [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
MOVIE_COLOURS = [(1, 1, 0), (0, 1, 1), (1, 0, 1)]
UDIM_COLOURS = {1001: (1, 0.5, 0), 1002: (0, 0.5, 1)}


def base_scene() -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.preferences.filepaths.save_version = 0  # no scene.blend1 beside the scene
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 2
    scene.cycles.use_denoising = False
    scene.cycles.seed = 3
    scene.cycles.max_bounces = 0  # emission only: nothing to gain from light paths, and volumes stay quick
    scene.cycles.volume_biased = True  # Blender 5.0's unbiased volumes took 7 s a frame here, this 0.1 s
    scene.render.resolution_x, scene.render.resolution_y = 32, 24
    scene.render.image_settings.file_format = "PNG"
    scene.frame_start, scene.frame_end = FRAMES
    bpy.ops.object.camera_add(location=(0, 0, 10))
    camera = bpy.context.object
    camera.data.type = "ORTHO"
    camera.data.ortho_scale = 8
    scene.camera = camera
    world = bpy.data.worlds.new("World")
    world.color = (0.3, 0.3, 0.3)
    scene.world = world
    return scene


def emission(name: str, image: bpy.types.Image | None = None) -> tuple[bpy.types.Material, bpy.types.Node | None]:
    material = bpy.data.materials.new(name)
    if material.node_tree is None:
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    shader = nodes.new("ShaderNodeEmission")
    out = nodes.new("ShaderNodeOutputMaterial")
    links.new(shader.outputs[0], out.inputs["Surface"])
    texture = None
    if image is not None:
        texture = nodes.new("ShaderNodeTexImage")
        texture.image = image
        texture.interpolation = "Closest"
        links.new(texture.outputs["Color"], shader.inputs["Color"])
    return material, texture


def plane(name: str, x: float, material: bpy.types.Material, u_span: float = 1.0) -> bpy.types.Object:
    bpy.ops.mesh.primitive_plane_add(size=2.2, location=(x, 0, 0))
    obj = bpy.context.object
    obj.name = name
    for loop in obj.data.uv_layers.active.data:
        loop.uv[0] *= u_span
    obj.data.materials.append(material)
    return obj


def solid_png(path: Path, colour: tuple[float, float, float], name: str = "tmp") -> None:
    image = bpy.data.images.new(name, 4, 4)
    image.pixels = [*colour, 1.0] * 16
    image.filepath_raw = str(path)
    image.file_format = "PNG"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save()
    bpy.data.images.remove(image)


def animate_image(texture: bpy.types.Node, frames: int) -> None:
    user = texture.image_user
    user.frame_duration = frames
    user.frame_start = FRAMES[0]
    user.frame_offset = 0
    user.use_auto_refresh = True


def write_movie(path: Path) -> None:
    """Three frames of solid colour through Blender's FFMPEG output (FFV1 in Matroska: lossless)."""
    scene = bpy.data.scenes.new("Movie")
    scene.render.resolution_x = scene.render.resolution_y = 16
    scene.frame_start, scene.frame_end = 1, len(MOVIE_COLOURS)
    if hasattr(scene.render.image_settings, "media_type"):  # Blender 5.0 lists video formats apart
        scene.render.image_settings.media_type = "VIDEO"
    scene.render.image_settings.file_format = "FFMPEG"
    scene.render.ffmpeg.format = "MKV"
    scene.render.ffmpeg.codec = "FFV1"
    scene.render.use_sequencer = True
    strips = scene.sequence_editor_create().strips
    for index, colour in enumerate(MOVIE_COLOURS):
        strip = strips.new_effect(f"c{index}", "COLOR", channel=1, frame_start=index + 1, length=1)
        strip.color = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    scene.render.filepath = str(path)
    with bpy.context.temp_override(scene=scene):
        bpy.ops.render.render(animation=True, scene=scene.name)
    bpy.data.scenes.remove(scene)
    written = next(path.parent.glob(path.name + "*"))
    if written != path:
        written.rename(path)


def textures(home: Path) -> None:
    base_scene()
    for index, colour in enumerate(SEQUENCE_COLOURS):
        solid_png(home / "sequence" / f"flip_{index + 1:04d}.png", colour)
    sequence = bpy.data.images.load(str(home / "sequence" / "flip_0001.png"))
    sequence.name = "Flip"
    sequence.source = "SEQUENCE"
    material, texture = emission("Flipbook", sequence)
    animate_image(texture, len(SEQUENCE_COLOURS))
    plane("Sequence", -2.6, material)

    write_movie(home / "movie" / "colours.mkv")
    movie = bpy.data.images.load(str(home / "movie" / "colours.mkv"))
    movie.name = "Colours"
    material, texture = emission("Screen", movie)
    animate_image(texture, len(MOVIE_COLOURS))
    plane("Movie", 0, material)

    tiles = bpy.data.images.new("Tiles", 4, 4, tiled=True)
    tiles.tiles.new(1002)
    for number, colour in UDIM_COLOURS.items():
        solid_png(home / "udim" / f"tiles.{number}.png", colour)
    tiles.source = "TILED"
    tiles.filepath = str(home / "udim" / "tiles.<UDIM>.png")
    tiles.reload()
    material, _ = emission("Tiled", tiles)
    plane("Udim", 2.6, material, u_span=2.0)


def foreign_paths(home: Path) -> None:
    """Paths as a friend's Windows machine saved them: a relative one with backslashes, whose file is
    here, and a drive-letter one, whose file is not."""
    base_scene()
    solid_png(home / "tex" / "wood.png", (0.8, 0.5, 0.2))
    wood = bpy.data.images.load(str(home / "tex" / "wood.png"))
    wood.name = "Wood"
    material, _ = emission("Table", wood)
    plane("Table", -1.5, material)
    far = bpy.data.images.new("Far", 4, 4)
    far.source = "FILE"
    material, _ = emission("Chair", far)
    plane("Chair", 1.5, material)
    solid_png(home / "absolute" / "brick.png", (0.6, 0.1, 0.1))
    brick = bpy.data.images.load(str(home / "absolute" / "brick.png"))
    brick.name = "Brick"
    material, _ = emission("Wall", brick)
    plane("Wall", 0, material)


def _windows_spelling(home: Path) -> None:
    bpy.data.images["Wood"].filepath = "//tex\\wood.png"
    bpy.data.images["Far"].filepath = "C:\\Users\\friend\\far.png"
    bpy.data.images["Brick"].filepath = str(home / "absolute" / "brick.png")  # as /Users/... is on a Mac


def caches(home: Path) -> None:
    scene = base_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(home / "scene.blend"))  # bakes and exports need a saved file

    # An OpenVDB file from Blender's own mesh-to-volume, baked; then used as a Volume data-block.
    helper = _geometry_nodes_object("VolumeHelper", (0, 0, 0), "GeometryNodeMeshToVolume")
    helper.modifiers[-1].node_group.nodes["Mesh to Volume"].inputs["Voxel Amount"].default_value = 12
    _bake(helper, "//volume_bake")
    vdb = next((home / "volume_bake").rglob("*.vdb"))
    (home / "volumes").mkdir()
    shutil.copy(vdb, home / "volumes" / "cube.vdb")
    bpy.data.objects.remove(helper)
    shutil.rmtree(home / "volume_bake")
    volume = bpy.data.volumes.new("Cloud")
    volume.filepath = str(home / "volumes" / "cube.vdb")
    cloud = bpy.data.objects.new("Cloud", volume)
    cloud.location = (-2.6, 0, 0)
    scene.collection.objects.link(cloud)
    fog = bpy.data.materials.new("Fog")
    if fog.node_tree is None:
        fog.use_nodes = True
    fog.node_tree.nodes.clear()
    fog_shader = fog.node_tree.nodes.new("ShaderNodeVolumePrincipled")  # reads the grid named "density"
    fog_shader.inputs["Density"].default_value = 4.0
    fog_shader.inputs["Emission Color"].default_value = (1, 0.2, 0.2, 1)
    fog_shader.inputs["Emission Strength"].default_value = 3.0
    fog_out = fog.node_tree.nodes.new("ShaderNodeOutputMaterial")
    fog.node_tree.links.new(fog_shader.outputs[0], fog_out.inputs["Volume"])
    volume.materials.append(fog)

    # An Alembic cache: a cube sliding along y, exported, removed, and imported back.
    bpy.ops.mesh.primitive_cube_add(size=1, location=(0, -2, 0))
    slider = bpy.context.object
    slider.keyframe_insert("location", frame=FRAMES[0])
    slider.location.y = 2
    slider.keyframe_insert("location", frame=FRAMES[1])
    bpy.ops.object.select_all(action="DESELECT")
    slider.select_set(True)
    (home / "alembic").mkdir()
    bpy.ops.wm.alembic_export(filepath=str(home / "alembic" / "slider.abc"), start=FRAMES[0], end=FRAMES[1],
                              selected=True)
    bpy.data.objects.remove(slider)
    bpy.ops.wm.alembic_import(filepath=str(home / "alembic" / "slider.abc"))
    material, _ = emission("Green")
    material.node_tree.nodes["Emission"].inputs["Color"].default_value = (0.1, 1, 0.1, 1)
    for obj in bpy.context.selected_objects:
        if obj.type == "MESH":
            obj.data.materials.append(material)

    # A simulation-nodes bake: each frame the geometry moves 1.2 up the image.
    bpy.ops.mesh.primitive_cube_add(size=1, location=(2.6, -2, 0))
    sim = bpy.context.object
    _simulation(sim)
    material, _ = emission("Blue")
    material.node_tree.nodes["Emission"].inputs["Color"].default_value = (0.2, 0.3, 1, 1)
    sim.data.materials.append(material)
    _bake(sim, "//sim_bake", mode="ANIMATION")
    # Live, the simulation would now move the other way: only the bake shows it rising.
    sim.modifiers[-1].node_group.nodes["Set Position"].inputs["Offset"].default_value = (0, -1.2, 0)


def particles(home: Path) -> None:
    """Particles baked to a disk cache (``//blendcache_scene/``), drawn as small spheres."""
    scene = base_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(home / "scene.blend"))  # a disk cache needs a saved file
    bpy.ops.mesh.primitive_ico_sphere_add(radius=0.4, subdivisions=1, location=(100, 0, 0))  # out of view
    dot = bpy.context.object
    material, _ = emission("Spark")
    material.node_tree.nodes["Emission"].inputs["Color"].default_value = (1, 0.9, 0.2, 1)
    dot.data.materials.append(material)
    bpy.ops.mesh.primitive_plane_add(size=3, location=(0, -2, 0), rotation=(-1.5708, 0, 0))
    emitter = bpy.context.object
    emitter.modifiers.new("Sparks", "PARTICLE_SYSTEM")
    system = emitter.particle_systems[0]
    settings = system.settings
    settings.count, settings.frame_start, settings.frame_end, settings.lifetime = 12, 1, 1, 50
    settings.normal_factor, settings.effector_weights.gravity = 30.0, 0.0  # 1.25 a frame
    settings.render_type, settings.instance_object, settings.particle_size = "OBJECT", dot, 1.0
    emitter.show_instancer_for_render = False
    cache = system.point_cache
    cache.use_disk_cache = True
    cache.frame_start, cache.frame_end = FRAMES
    with bpy.context.temp_override(point_cache=cache, object=emitter, active_object=emitter):
        bpy.ops.ptcache.bake(bake=True)
    scene.frame_set(FRAMES[0])


def libraries(home: Path) -> None:
    """Two linked libraries, each giving a material; one of them textured from a file beside it."""
    for name, colour in (("lib_a", (0.9, 0.1, 0.1)), ("lib_b", (0.1, 0.2, 0.9))):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        solid_png(home / "libs" / f"{name}.png", colour)
        image = bpy.data.images.load(str(home / "libs" / f"{name}.png"))
        material, _ = emission(name, image)
        material.use_fake_user = True
        bpy.ops.wm.save_as_mainfile(filepath=str(home / "libs" / f"{name}.blend"), relative_remap=True)
    base_scene()
    for index, name in enumerate(("lib_a", "lib_b")):
        with bpy.data.libraries.load(str(home / "libs" / f"{name}.blend"), link=True, relative=True) as (_, data):
            data.materials = [name]
        plane(name, -1.5 + 3 * index, data.materials[0])


def hazards(home: Path) -> None:
    for name in ("lib_c", "broken", "baked"):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.context.preferences.filepaths.save_version = 0
        solid_png(home / "libs" / f"{name}.png", (0.2, 0.9, 0.2))
        material, _ = emission(name, bpy.data.images.load(str(home / "libs" / f"{name}.png")))
        material.use_fake_user = True
        bpy.ops.wm.save_as_mainfile(filepath=str(home / "libs" / f"{name}.blend"), relative_remap=True)
        if name == "baked":
            _bake(_geometry_nodes_object("Baked", (0, 0, 0), "GeometryNodeMeshToPoints"), "//lib_bake")
            bpy.ops.wm.save_as_mainfile(filepath=str(home / "libs" / "baked.blend"), relative_remap=True)
    shutil.move(home / "libs" / "lib_c.blend", home / "libs" / "lib_c.library")
    scene = base_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(home / "scene.blend"))
    for index, (library, what) in enumerate((("lib_c.library", "materials"), ("broken.blend", "materials"),
                                             ("baked.blend", "objects"))):
        with bpy.data.libraries.load(str(home / "libs" / library), link=True, relative=True) as (_, data):
            setattr(data, what, [Path(library).stem if what == "materials" else "Baked"])
        if what == "materials":
            plane(library, -3 + 3 * index, getattr(data, what)[0])
        else:
            scene.collection.objects.link(getattr(data, what)[0])
    (home / "folder_image").mkdir()
    solid_png(home / "seq" / "flip_0001.png", (1, 0, 0))
    solid_png(home.parent / "elsewhere" / "far.png", (0, 0, 1))
    for name, path, source in (("Folder", "//folder_image", "FILE"), ("Zero", "/dev/zero", "FILE"),
                               ("Pipe", "//pipe.png", "FILE"), ("Hashes", "//seq/flip_####.png", "SEQUENCE"),
                               ("Far", str(home.parent / "elsewhere" / "far.png"), "FILE")):
        image = bpy.data.images.new(name, 4, 4)
        image.source, image.filepath, image.use_fake_user = source, path, True
    for name, folder in (("Root", "/"), ("Home", str(Path.home())), ("Beside", "//")):
        obj = _geometry_nodes_object(name, (0, 0, 0), "GeometryNodeMeshToPoints")
        obj.modifiers[-1].bake_directory, obj.modifiers[-1].bake_target = folder, "DISK"


def bakes(home: Path) -> None:
    base_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(home / "scene.blend"))
    two = _geometry_nodes_object("Two", (0, 0, 0), "GeometryNodeMeshToPoints")
    tree = two.modifiers[-1].node_group
    second = tree.nodes.new("GeometryNodeBake")
    second.bake_items.new("GEOMETRY", "Geometry")
    tree.links.new(tree.nodes["Bake"].outputs[0], second.inputs[0])
    tree.links.new(second.outputs[0], tree.nodes["Group Output"].inputs[0])
    bpy.context.view_layer.update()
    two.modifiers[-1].bakes[1].use_custom_path = True
    two.modifiers[-1].bakes[1].directory = "//custom_bake"
    _bake(two, "//modifier_bake")
    never = _geometry_nodes_object("Never", (0, 0, 0), "GeometryNodeMeshToPoints")
    never.modifiers[-1].bake_directory, never.modifiers[-1].bake_target = "//never_baked", "DISK"
    bpy.ops.mesh.primitive_plane_add(size=3, location=(0, -2, 0))
    emitter = bpy.context.object
    emitter.modifiers.new("Sparks", "PARTICLE_SYSTEM")
    emitter.particle_systems[0].point_cache.use_disk_cache = True  # and never baked


def _geometry_nodes_object(name: str, location: tuple, node_type: str) -> bpy.types.Object:
    bpy.ops.mesh.primitive_cube_add(size=1.5, location=location)
    obj = bpy.context.object
    obj.name = name
    tree = _tree(name)
    group_in, group_out = tree.nodes.new("NodeGroupInput"), tree.nodes.new("NodeGroupOutput")
    convert, bake = tree.nodes.new(node_type), tree.nodes.new("GeometryNodeBake")
    bake.bake_items.new("GEOMETRY", "Geometry")
    tree.links.new(group_in.outputs[0], convert.inputs[0])
    tree.links.new(convert.outputs[0], bake.inputs[0])
    tree.links.new(bake.outputs[0], group_out.inputs[0])
    obj.modifiers.new("Nodes", "NODES").node_group = tree
    return obj


def _simulation(obj: bpy.types.Object) -> None:
    tree = _tree("Rise")
    nodes, links = tree.nodes, tree.links
    group_in, group_out = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    start, end = nodes.new("GeometryNodeSimulationInput"), nodes.new("GeometryNodeSimulationOutput")
    start.pair_with_output(end)
    if not len(end.state_items):  # made from Python, the zone has no state yet
        end.state_items.new("GEOMETRY", "Geometry")
    move = nodes.new("GeometryNodeSetPosition")
    move.inputs["Offset"].default_value = (0, 1.2, 0)
    links.new(group_in.outputs[0], start.inputs[0])
    links.new(start.outputs[1], move.inputs["Geometry"])
    links.new(move.outputs[0], end.inputs["Geometry"])
    links.new(end.outputs["Geometry"], group_out.inputs[0])
    obj.modifiers.new("Simulation", "NODES").node_group = tree


def _tree(name: str) -> bpy.types.NodeTree:
    tree = bpy.data.node_groups.new(name, "GeometryNodeTree")
    tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    return tree


def _bake(obj: bpy.types.Object, directory: str, mode: str = "STILL") -> None:
    modifier = obj.modifiers[-1]
    modifier.bake_directory = directory
    modifier.bake_target = "DISK"
    bpy.context.view_layer.update()
    for bake in modifier.bakes:
        bake.bake_mode = mode
        with bpy.context.temp_override(object=obj, active_object=obj, selected_objects=[obj]):
            bpy.ops.object.geometry_node_bake_single(session_uid=obj.session_uid, modifier_name=modifier.name,
                                                     bake_id=bake.bake_id)


def main() -> None:
    kind, home = sys.argv[-2], Path(sys.argv[-1])
    home.mkdir(parents=True, exist_ok=True)
    {"textures": textures, "caches": caches, "particles": particles,
     "libraries": libraries, "foreign_paths": foreign_paths, "hazards": hazards, "bakes": bakes}[kind](home)
    bpy.ops.wm.save_as_mainfile(filepath=str(home / "scene.blend"), relative_remap=True)
    bpy.ops.file.make_paths_relative()
    if kind == "foreign_paths":
        _windows_spelling(home)
    bpy.ops.wm.save_mainfile()


if __name__ == "__main__":
    main()
