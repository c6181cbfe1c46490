"""The add-on as the extension zip lays it out, enabled in a fresh Blender (bpy) process.

Layout: the add-on's modules and manifest at the top, the farm code in ``farm/``,
which holds nothing but ``farm_pipelines/``:

    pachyderm_farm/__init__.py, jobs.py, ..., blender_manifest.toml
    pachyderm_farm/farm/farm_pipelines/...

Only ``farm/`` may go on ``sys.path``, so no other add-on can import the add-on's
``jobs`` or ``operators`` by mistake; the farm's workers, started with that
``sys.path``, must still find the farm code and the wheels. Enabling the add-on
and drawing its panel and menu must not import the heavy packages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = r'''
import importlib.util, json, os, subprocess, sys
from types import SimpleNamespace

import bpy  # first: it puts Blender's scripts (addon_utils) on sys.path
import addon_utils

repo_dir, module = sys.argv[-2:]
extension = os.path.join(repo_dir, "pachyderm_farm")
farm_code = os.path.join(extension, "farm")
HEAVY = ("grpc", "cv2", "python_pachyderm", "OpenEXR")


class Layout:  # accepts any drawing call; what is drawn is checked in test_addon.py
    def __getattr__(self, name):
        return lambda *args, **kwargs: Layout()

    def __setattr__(self, name, value):
        pass


bpy.context.preferences.extensions.repos.new(name="Layout", module="layout_test", custom_directory=repo_dir,
                                             source="USER")
addon_utils.enable(module, default_set=True, handle_error=None)
facts = {"enabled": module in bpy.context.preferences.addons,
         "heavy_after_enable": [name for name in HEAVY if name in sys.modules]}
bpy.types.RENDER_PT_farm.draw(SimpleNamespace(layout=Layout()), bpy.context)
bpy.types.TOPBAR_MT_render.draw(SimpleNamespace(layout=Layout()), bpy.context)
facts["heavy_after_draw"] = [name for name in HEAVY if name in sys.modules]
facts["farm_code_on_path"] = farm_code in sys.path
facts["extension_on_path"] = extension in sys.path
import farm_pipelines
facts["farm_pipelines"] = farm_pipelines.__file__
facts["top_level"] = {name: importlib.util.find_spec(name) is not None
                      for name in ("jobs", "images", "operators", "panels", "submit", "menus")}

from farm_pipelines.host import Host
argv, extra = Host(blender="blender").module_argv("farm_pipelines.cli", "--help")
runner = argv[argv.index("--python-expr") + 1]
# -S: no site-packages and no editable install of the project; all the worker has is FARM_SYS_PATH.
worker = subprocess.run([sys.executable, "-S", "-c", runner, "--", "farm_pipelines.cli", "--help"],
                        env={**os.environ, **extra}, capture_output=True, text=True, timeout=120)
facts["worker"] = [worker.returncode, worker.stdout + worker.stderr]

addon_utils.disable(module, default_set=True, handle_error=None)
facts["farm_code_on_path_after_disable"] = farm_code in sys.path
print("FACTS " + json.dumps(facts))
'''


def lay_out_extension(repo: Path) -> Path:
    """The extension's folder as Blender unpacks the zip into a repository."""
    extension = repo / "pachyderm_farm"
    extension.mkdir(parents=True)
    for source in (ROOT / "addon").glob("*.py"):
        shutil.copy(source, extension)
    shutil.copy(ROOT / "blender_manifest.toml", extension)
    shutil.copytree(ROOT / "farm_pipelines", extension / "farm" / "farm_pipelines",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return extension


def test_only_the_farm_code_goes_on_sys_path_and_workers_still_find_it(tmp_path: Path) -> None:
    extension = lay_out_extension(tmp_path / "repo")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["BLENDER_USER_RESOURCES"] = str(tmp_path / "user")  # never the developer's own preferences
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "repo"), "bl_ext.layout_test.pachyderm_farm"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("FACTS ")]
    assert done.returncode == 0 and lines, done.stdout + done.stderr
    facts = json.loads(lines[-1].removeprefix("FACTS "))

    assert facts["enabled"]
    assert facts["farm_code_on_path"] and not facts["extension_on_path"]
    assert Path(facts["farm_pipelines"]).is_relative_to(extension / "farm"), facts["farm_pipelines"]
    assert facts["top_level"] == dict.fromkeys(facts["top_level"], False), "the add-on's modules stay its own"
    assert facts["heavy_after_enable"] == [] and facts["heavy_after_draw"] == [], facts
    code, output = facts["worker"]
    assert code == 0 and "usage: farm" in output, output
    assert not facts["farm_code_on_path_after_disable"]
