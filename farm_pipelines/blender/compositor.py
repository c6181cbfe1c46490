"""Where a scene's compositor lives, on each Blender the farm supports.

Blender 5.0 made the compositor a node group that the scene points at
(``scene.compositing_node_group``), whose Group Output is the result; a scene
can be pointed at another tree for one render. Blender 4.5 keeps a single tree
embedded in the scene (``scene.node_tree``, used when ``scene.use_nodes``), whose
Composite node is the result. The encoder needs one tree of its own per job, so
on 4.5 it takes over that embedded tree: the merger's copy of the job's blend
is never saved, so nothing is lost.
"""

from __future__ import annotations

import bpy

from farm_pipelines.errors import FarmFailure


class GroupCompositor:
    """Blender 5.0 and later: every tree is a node group; the scene renders through the one it points at."""

    def __init__(self, scene: bpy.types.Scene) -> None:
        self.scene = scene

    def user_tree(self) -> bpy.types.NodeTree | None:
        return self.scene.compositing_node_group

    def new_tree(self, name: str) -> tuple[bpy.types.NodeTree, bpy.types.NodeSocket]:
        """A new, empty tree and the socket whose input is the rendered image."""
        tree = bpy.data.node_groups.new(name, "CompositorNodeTree")
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        return tree, tree.nodes.new("NodeGroupOutput").inputs[0]

    def user_tree_to_edit(self) -> bpy.types.NodeTree:
        return self.user_tree().copy()

    def show(self, tree: bpy.types.NodeTree) -> None:
        self.scene.compositing_node_group = tree


class EmbeddedCompositor:
    """Blender 4.5: the scene has one embedded tree, so the farm's tree is that one, built or edited once."""

    def __init__(self, scene: bpy.types.Scene) -> None:
        self.scene = scene
        self._taken = False

    def user_tree(self) -> bpy.types.NodeTree | None:
        return self.scene.node_tree if self.scene.use_nodes else None

    def new_tree(self, name: str) -> tuple[bpy.types.NodeTree, bpy.types.NodeSocket]:
        self._take()
        self.scene.use_nodes = True
        tree = self.scene.node_tree
        tree.nodes.clear()
        return tree, tree.nodes.new("CompositorNodeComposite").inputs["Image"]

    def user_tree_to_edit(self) -> bpy.types.NodeTree:
        self._take()
        return self.scene.node_tree

    def show(self, tree: bpy.types.NodeTree) -> None:
        pass  # the scene's only tree is the one in use

    def _take(self) -> None:
        # A job's frames are all whole (encoded) or all pieces (composited): its tiling decides.
        if self._taken:
            raise FarmFailure("Blender 4.5 has one compositor tree per scene: a job's frames must all be "
                              "whole frames or all be tiled")
        self._taken = True


def compositor_for(scene: bpy.types.Scene) -> GroupCompositor | EmbeddedCompositor:
    if "compositing_node_group" in bpy.types.Scene.bl_rna.properties:
        return GroupCompositor(scene)
    return EmbeddedCompositor(scene)


def mute_file_outputs(scene: bpy.types.Scene) -> list[str]:
    """Switch off every File Output node the scene's compositor reaches, nested groups included.

    A scene from someone else could point one at any folder of the farm machine, and
    it would write there during a whole-frame render or the merge. Only the farm writes
    frames, into the job's output; the names of the nodes switched off are returned.
    """
    tree = compositor_for(scene).user_tree()
    muted: list[str] = []
    seen: set[str] = set()
    trees = [tree] if tree is not None else []
    while trees:
        current = trees.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        for node in current.nodes:
            if node.bl_idname == "CompositorNodeOutputFile" and not node.mute:
                node.mute = True
                muted.append(node.name)
            elif getattr(node, "node_tree", None) is not None:
                trees.append(node.node_tree)
    return muted
