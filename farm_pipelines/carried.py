"""What a job carries: the files copied in beside its blend, and those it could not get.

``dependencies.carry`` makes it; the job folder's fingerprint, its completeness check and
the submission's one-line summary read it, without the tracer.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CarriedFile:
    path: str  # relative to the job's blend (``files/<key>/<name>``), POSIX
    sha256: str
    size: int
    new: bool  # the store did not have this content before


@dataclass
class Carried:
    """What a job's scene folder holds besides its blend, and what it could not get."""

    files: list[CarriedFile] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # each with the data-block that uses it
    outside: int = 0  # files from outside the scene's folder (when ``carry`` was told the folder)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def summary(self) -> str:
        new = [f for f in self.files if f.new]
        outside = f", {self.outside} from outside the scene's folder" if self.outside else ""
        return (f"the job carries {len(self.files)} file(s), {_megabytes(self.size)} MB, "
                f"{len(new)} new ({_megabytes(sum(f.size for f in new))} MB){outside}")



def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f}"
