"""Pachyderm Render Farm: render the current scene as tiles on a local farm or on Pachyderm.

The farm code (``farm_pipelines``) ships inside this extension and uses absolute
imports, so the extension's own directory goes on ``sys.path`` while it is enabled.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _expose_farm_code() -> None:
    if _HERE not in sys.path:
        sys.path.insert(0, _HERE)


_expose_farm_code()

from . import dependencies, jobs, operators, panels, preferences, properties  # noqa: E402

_MODULES = (properties, preferences, operators, panels)


def register() -> None:
    _expose_farm_code()
    for module in _MODULES:
        module.register()
    missing = dependencies.missing()
    if missing:
        print(f"warning: {dependencies.message(missing)}", file=sys.stderr)


def unregister() -> None:
    jobs.shut_down()
    for module in reversed(_MODULES):
        module.unregister()
    if _HERE in sys.path:
        sys.path.remove(_HERE)
