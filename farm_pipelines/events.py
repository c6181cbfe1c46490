"""What a farm job tells whoever follows it: one frozen dataclass per kind of message.

``submission.render`` runs on the add-on's background thread, which puts these on
a queue for the main thread; the CLI prints them. Each side picks what it shows
with ``isinstance``, so a new kind of message cannot be mistaken for an old one
and a field one kind lacks cannot be read by mistake.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from farm_pipelines.backend import Progress


@dataclass(frozen=True)
class Info:
    """A line for the artist: the tile size Auto chose, or that the job waits for another run of itself."""

    message: str


@dataclass(frozen=True)
class Detail:
    """How the farm goes about the job (datums each stage processes, damaged outputs redone):
    for terminals and logs, not for the add-on's panel."""

    message: str


@dataclass(frozen=True)
class Caution:
    """Something the artist should know about the result, such as a file the job renders without."""

    message: str


@dataclass(frozen=True)
class ProgressUpdate:
    progress: Progress


@dataclass(frozen=True)
class FrameDone:
    """A finished frame, already in the output folder."""

    frame: int
    path: Path


@dataclass(frozen=True)
class Done:
    """The outcome of a job whose every frame is done."""

    message: str


FarmEvent = Info | Detail | Caution | ProgressUpdate | FrameDone | Done
