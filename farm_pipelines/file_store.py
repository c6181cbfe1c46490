"""Files a job carries, kept once by content: ``<root>/<sha256>``, hard-linked into each job folder.

The same texture in two jobs, or in two versions of one job, is one file on disk:
a job folder holds hard links to the store's copy (a plain copy where the file
system has no hard links). The store copies a source file in once, to a temporary
name then renamed, so a user who edits the texture in place later never changes a
job already prepared. It hashes the bytes it copies and keeps them under that hash:
a file edited while the job was prepared is refused, never stored under another
content's name.

``farm clean`` and the cache cap remove stored files no job folder links any more
(link count 1). One this store has just kept or found, but not linked yet, may go in
between: ``link`` then stores it again from its source.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from farm_pipelines.blend_cache import file_sha256
from farm_pipelines.errors import BadInput

_CHUNK = 1 << 20


class FileStore:
    """A content-addressed folder of the files jobs carry."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._hashes: dict[tuple[str, int, int, int], str] = {}
        self._sources: dict[str, Path] = {}  # sha256 -> the file ``put`` was given, to store it again

    def sha256(self, path: Path) -> str:
        """The file's SHA-256, remembered while its inode, size and mtime stay the same."""
        stat = os.stat(path)
        key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = file_sha256(path)
        return self._hashes[key]

    def has(self, sha256: str) -> bool:
        return (self.root / sha256).is_file()

    def put(self, source: Path, sha256: str | None = None) -> tuple[str, bool]:
        """Keep ``source`` in the store; returns (its sha256, whether the store lacked it).

        ``sha256`` is the content the caller hashed earlier (the job's blend names it); the
        copy is hashed as it is written, and a difference means the file changed since.
        """
        sha256 = sha256 or self.sha256(source)
        self._sources[sha256] = Path(source)
        if self.has(sha256):
            return sha256, False
        self.root.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=self.root, prefix=".", suffix=".part")
        try:
            digest = hashlib.sha256()
            with os.fdopen(handle, "wb") as writer, open(source, "rb") as reader:
                while chunk := reader.read(_CHUNK):
                    digest.update(chunk)
                    writer.write(chunk)
            if digest.hexdigest() != sha256:
                raise BadInput(f"{source} changed while the job was prepared; submit again")
            os.chmod(temp, 0o444)  # a job's links share this inode: nobody writes through them
            os.replace(temp, self.root / sha256)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return sha256, True

    def link(self, sha256: str, destination: Path) -> None:
        """Make ``destination`` the stored file: a hard link, or a copy where links are refused."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        source = self.root / sha256
        if sha256 in self._sources and not source.is_file():  # a cleaner removed it since ``put``
            self.put(self._sources[sha256], sha256)
        try:
            os.link(source, destination)
        except OSError:
            shutil.copyfile(source, destination)
