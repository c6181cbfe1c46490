"""The thin Blender edge: the only modules that import bpy."""
