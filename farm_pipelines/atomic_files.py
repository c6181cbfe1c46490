"""Write files so that readers see the old file or the whole new one, never half of one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``final``; rename it over ``final`` only if the block succeeds.

    The temporary name keeps the extension, so tools that pick a format by
    extension (Blender, OpenCV) still do the right thing.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp{final.suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(final: Path, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def copy_file(source: Path, final: Path) -> None:
    with atomic_path(final) as tmp:
        shutil.copyfile(source, tmp)
