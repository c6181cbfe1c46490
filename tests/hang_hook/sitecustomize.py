"""Makes one farm process really hang, for tests/test_faults.py; Python imports this at start-up.

With this folder on PYTHONPATH and ``FARM_TEST_HANG=MODULE:start`` (or ``:exit``), the
process running ``python -m MODULE`` blocks for good on an event nothing sets: before it
does anything, or at exit after Blender has shut down (its exit handler runs after bpy's).
Either way it uses no CPU, as a deadlocked Blender does. Its pid goes to ``FARM_TEST_HANG_PIDS``.
"""

import atexit
import os
import sys
import threading

_module, _, _when = os.environ.get("FARM_TEST_HANG", "").partition(":")
if _module and _module in sys.orig_argv:
    with open(os.path.join(os.environ["FARM_TEST_HANG_PIDS"], str(os.getpid())), "w"):
        pass
    if _when == "start":
        threading.Event().wait()
    elif _when == "exit":
        atexit.register(threading.Event().wait)
