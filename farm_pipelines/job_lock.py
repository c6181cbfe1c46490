"""One submission of a job at a time on this machine, from prepare to the last fetched frame."""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def job_lock(state_dir: Path, job_name: str, log: Callable[[str], None]) -> Iterator[None]:
    """Hold ``<state>/locks/<job>.lock``; a second run of the same job waits, then resumes its work."""
    path = Path(state_dir) / "locks" / f"{job_name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another run of job {job_name} is in progress; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
