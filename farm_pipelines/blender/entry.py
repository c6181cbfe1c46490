"""Run a Blender-side entry point so that bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from farm_pipelines.errors import BadInput, FarmFailure


def run(main: Callable[[], None]) -> None:
    try:
        main()
    except BadInput as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    except FarmFailure as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
