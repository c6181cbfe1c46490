"""The thin Blender edge: the only modules that import bpy.

Importing bpy as a module builds some 60,000 Python objects, and Python's cycle
collector walks them over and over while it does: 0.08 s of CPU in every worker
process. So in a worker the first import runs with the collector paused, and the
objects it built are frozen out of later collections.

They are given back at exit: bpy's exit handler collects garbage and then shuts
Blender down, and frozen objects still holding Blender data make that shutdown
leak ("Not freed memory blocks") and, on Blender 4.5, deadlock in a static
destructor (the audio device's delayed-close thread), so the process never ends.
Exit handlers run last-registered first, so this one runs before bpy's.
"""

import atexit
import gc
import sys

if "bpy" not in sys.modules:  # a worker process; inside Blender's own UI bpy is loaded already
    gc.disable()
    try:
        import bpy  # noqa: F401
    finally:
        gc.enable()
        gc.freeze()
        atexit.register(gc.unfreeze)
