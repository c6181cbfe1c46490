"""Pachyderm Render Farm: render the current scene as tiles on a local farm or on Pachyderm.

The farm code (``farm_pipelines``) ships inside this extension and uses absolute
imports, and the farm's Blender workers import it by name too. The zip keeps it in
a folder of its own, ``farm/``, holding nothing but ``farm_pipelines/``, and only
that folder goes on ``sys.path`` while the add-on is enabled: the add-on's own
modules (``jobs``, ``images``, ``operators``...) never become top-level modules
that could shadow another add-on's. The farm's workers get the same ``sys.path``
(``FARM_SYS_PATH``, see ``farm_pipelines.host``), so they find the farm code and
the extension's wheels. Run from the project itself (the tests), ``farm_pipelines``
is the project's own and there is no ``farm/`` folder.
"""

from __future__ import annotations

import os
import sys

FARM_CODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "farm")


def _expose_farm_code() -> None:
    if os.path.isdir(FARM_CODE) and FARM_CODE not in sys.path:
        sys.path.insert(0, FARM_CODE)


_expose_farm_code()

from . import dependencies, jobs, menus, operators, panels, preferences, properties  # noqa: E402

_MODULES = (properties, preferences, operators, panels, menus)


def register() -> None:
    _expose_farm_code()
    for module in _MODULES:
        module.register()
    dependencies.recheck()
    missing = dependencies.missing()
    if missing:
        print(f"warning: {dependencies.message(missing)}", file=sys.stderr)


def unregister() -> None:
    jobs.shut_down()
    for module in reversed(_MODULES):
        module.unregister()
    if FARM_CODE in sys.path:
        sys.path.remove(FARM_CODE)
