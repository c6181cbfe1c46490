"""How to start a process that can ``import bpy``: the Blender binary or a Python that has bpy.

Inside Blender the add-on passes ``bpy.app.binary_path``, and workers run
``blender --background --factory-startup --python-expr ...``. With bpy as a
Python module (tests, the CLI) ``bpy.app.binary_path`` is empty and workers run
on this very Python. Either way a transform's ``python3 -m MODULE`` becomes
"run MODULE where bpy imports".
"""

from __future__ import annotations

import os
import sys
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
