"""How to start a process that can ``import bpy``: the Blender binary or a Python that has bpy.

Inside Blender the add-on passes ``bpy.app.binary_path``, and workers run
``blender --background --factory-startup --python-expr ...``. With bpy as a
Python module (tests, the CLI) ``bpy.app.binary_path`` is empty and workers run
on this very Python. Either way a transform's ``python3 -m MODULE`` becomes
"run MODULE where bpy imports".

Every such process gets a scratch folder of its own (``Host.scratch``) as
Blender's user resources and temporary folder:

* A worker must never touch the user's Blender installation. Blender keeps the
  wheels of every enabled extension in the user's extensions ``site-packages``
  and re-syncs them against the extensions the running process has enabled
  (``addon_utils._initialize_extensions_compat_data``, run by
  ``extensions_refresh`` and by ``wm.read_factory_settings``). A farm process has
  none enabled, so a sync there would delete the wheels of the user's own
  Blender. With ``BLENDER_USER_RESOURCES`` pointing into the scratch folder, any
  such sync sees an empty extensions folder of its own; the wheels the worker
  imports come through ``FARM_SYS_PATH`` read-only.
* Blender makes ``$TMPDIR/blender_XXXXXX`` at start and removes it only on a clean
  exit; workers are stopped with a signal, so that folder would be left behind
  in the user's ``/tmp`` by every worker. Inside the scratch folder, it goes when
  the scratch folder does.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_BLENDER_RUNNER = (
    "import os, runpy, sys; "
    "sys.path[:0] = [p for p in os.environ.get('FARM_SYS_PATH', '').split(os.pathsep) if p]; "
    "sys.argv = [sys.argv[0]] + sys.argv[sys.argv.index('--') + 2:] if '--' in sys.argv else sys.argv; "
    "runpy.run_module(os.environ['FARM_MODULE'], run_name='__main__')"
)


@dataclass(frozen=True)
class Host:
    blender: str | None = None  # path of a Blender binary; None: this Python has bpy

    def module_argv(self, module: str, *args: str) -> tuple[list[str], dict[str, str]]:
        """argv and extra environment that run ``python -m module args`` with bpy importable."""
        if not self.blender:
            return [sys.executable, "-m", module, *args], {}
        argv = [self.blender, "--background", "--factory-startup", "--python-exit-code", "1",
                "--python-expr", _BLENDER_RUNNER, "--", module, *args]
        return argv, {"FARM_MODULE": module, "FARM_SYS_PATH": os.pathsep.join(sys.path)}

    def transform_argv(self, cmd: list[str]) -> tuple[list[str], dict[str, str]]:
        """Map a spec's ``transform.cmd`` (``python3 -m MODULE ...``) onto this host."""
        if len(cmd) >= 3 and os.path.basename(cmd[0]).startswith("python") and cmd[1] == "-m":
            return self.module_argv(cmd[2], *cmd[3:])
        return list(cmd), {}

    def run_to_result(self, module: str, args: list[str], result: os.PathLike, what: str) -> tuple[int, str]:
        """Run ``python -m module args`` here in a scratch folder of its own until it writes ``result``
        (``liveness.run_to_result``: a process that stalls is ended); its exit code and stderr."""
        from farm_pipelines import liveness  # only the submitting side runs Blender to a result

        argv, extra = self.module_argv(module, *args)
        with self.scratch() as scratch:
            return liveness.run_to_result(argv, {**os.environ, **extra, **scratch}, result, what)

    @staticmethod
    @contextmanager
    def scratch() -> Iterator[dict[str, str]]:
        """Environment for one Blender process: private user resources and temp folder, removed after.

        Hold it for the process's whole life, and until it has exited.
        """
        folder = tempfile.mkdtemp(prefix="pachyderm-farm-blender-")
        try:
            os.mkdir(os.path.join(folder, "user"))
            os.mkdir(os.path.join(folder, "tmp"))
            yield {"BLENDER_USER_RESOURCES": os.path.join(folder, "user"), "TMPDIR": os.path.join(folder, "tmp")}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
