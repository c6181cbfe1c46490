"""Everything a blend needs, traced and carried into its job folder by Blender Asset Tracer (BAT).

BAT reads .blend files without Blender and finds what Flamenco's packs carry: images,
image sequences, UDIM sets, movies, OpenVDB volumes, Alembic and USD caches,
simulation-node bakes, point caches, sounds, fonts and linked libraries (whose own
files it follows). It rewrites every path in the copies to a relative one.

The job folder's layout is ours, not BAT's ``_outside_project``: each traced asset
(one file, or one sequence, UDIM set or bake folder) goes to ``files/<key>/<name>``,
``key`` a hash of its content and of everything it refers to. Names stay as the
artist chose them (a sequence's frame numbers are in them), and the blend's bytes
change whenever anything it carries changes, so a worker that finds a blend by its
hash (``blend_cache``) never renders with an old texture. Files go through the
``FileStore``, so each content is stored once.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from blender_asset_tracer import blendfile, bpathlib, pack, trace
from blender_asset_tracer.pack import transfer
from blender_asset_tracer.trace import file_sequence, result

from farm_pipelines.file_store import FileStore

#: ``C:\``, ``C:/`` or ``\\server\share``: a path only Windows can open.
_WINDOWS_ABSOLUTE = re.compile(rb"^([A-Za-z]:[\\/]|\\\\)")


@dataclass(frozen=True)
class CarriedFile:
    path: str  # inside the job folder, POSIX
    sha256: str
    size: int
    new: bool  # the store did not have this content before


@dataclass
class Carried:
    """What a job folder holds besides its scene.blend, and what it could not get."""

    files: list[CarriedFile] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # each with the data-block that uses it

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def summary(self) -> str:
        new = [f for f in self.files if f.new]
        return (f"the job carries {len(self.files)} file(s), {_megabytes(self.size)} MB, "
                f"{len(new)} new ({_megabytes(sum(f.size for f in new))} MB)")


def carry(blend: Path, job_folder: Path, store: FileStore, users: dict[str, str]) -> Carried:
    """Write ``job_folder/scene.blend`` (``blend`` with its paths rewritten) and every file it needs.

    ``users`` names each data-block's users (``prepare`` reports them: ``"IMWood"`` ->
    ``image "Wood" of material "Table"``), so that a missing file says what uses it.
    """
    carried = Carried()
    packer = _JobPacker(Path(blend), job_folder, store)
    try:
        packer.strategise()
        packer.execute()
        for target, source in packer.sends.items():
            relative = target.relative_to(job_folder).as_posix()
            if target == Path(packer.output_path):  # the blend itself, whatever the copy was called
                job_folder.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, job_folder / "scene.blend")
                continue
            sha256, new = store.put(source, packer.hashes.get(source))
            store.link(sha256, target)
            carried.files.append(CarriedFile(relative, sha256, target.stat().st_size, new))
    finally:
        packer.close()
        blendfile.close_all_cached()
    for path, usages in sorted(packer.missing_usages.items()):
        carried.missing.append(f"{path} ({', '.join(sorted({_describe(u, users) for u in usages}))})")
    carried.files.sort(key=lambda f: f.path)
    return carried


class _JobPacker(pack.Packer):
    """BAT's packer with the job folder's layout, files sent through the store, and users of missing files."""

    def __init__(self, blend: Path, job_folder: Path, store: FileStore) -> None:
        super().__init__(blend, blend.parent, str(job_folder))
        self.store = store
        self.sends: dict[Path, Path] = {}  # target -> source; BAT sends a sequence's first file twice
        self.hashes: dict[Path, str] = {}
        self.missing_usages: dict[str, list[result.BlockUsage]] = defaultdict(list)

    def _visit_asset(self, asset_path: Path, usage: result.BlockUsage) -> None:
        if _WINDOWS_ABSOLUTE.match(bytes(usage.asset_path)) and os.name != "nt":
            self._missing(usage, f"{usage.asset_path.decode(errors='replace')} (a Windows path)")
            return
        if not usage.is_sequence and not asset_path.exists():
            self._missing(usage, str(asset_path))
            return
        super()._visit_asset(asset_path, usage)

    def _visit_sequence(self, asset_path: Path, usage: result.BlockUsage) -> None:
        if _WINDOWS_ABSOLUTE.match(bytes(usage.asset_path)) and os.name != "nt":
            self._missing(usage, f"{usage.asset_path.decode(errors='replace')} (a Windows path)")
            return
        if not any(p.exists() for p in _sequence_files(asset_path)):
            self._missing(usage, str(asset_path))
            return
        super()._visit_sequence(asset_path, usage)

    def _missing(self, usage: result.BlockUsage, shown: str) -> None:
        self.missing_usages[shown].append(usage)

    def _find_new_paths(self) -> None:
        """``files/<key>/<name>`` for every asset; ``key`` covers the asset and what it refers to."""
        self._trace_libraries()
        keys: dict[Path, str] = {}
        for path in self._new_location_paths:
            self._actions[path].new_path = Path(self._target_path, "files", self._key(path, keys, set()), path.name)

    def _trace_libraries(self) -> None:
        """Trace every carried library whole, and the libraries those link.

        BAT follows a library only through the placeholders of linked data-blocks that the
        linking file holds, which files saved by Blender 5.0 no longer write as ``ID`` blocks: a
        linked material's texture was never found. Tracing the library file itself finds it (and
        any other file the library uses, linked or not).
        """
        traced: set[Path] = set()
        while todo := [p for p in self._new_location_paths if p.suffix == ".blend" and p not in traced
                       and p.is_file()]:
            for library in todo:
                traced.add(library)
                for usage in trace.deps(library):
                    visit = self._visit_sequence if usage.is_sequence else self._visit_asset
                    visit(usage.abspath, usage)

    def _key(self, path: Path, keys: dict[Path, str], visiting: set[Path]) -> str:
        if path not in keys:
            visiting.add(path)
            digest = hashlib.sha256()
            for file in _asset_files(path, self._actions[path].usages):
                self.hashes[file] = self.store.sha256(file)
                digest.update(f"{file.relative_to(path.parent).as_posix()}\0{self.hashes[file]}\0".encode())
            for used in sorted(self._assets_used_by(path) - visiting):  # a library's own files
                digest.update(self._key(used, keys, visiting).encode())
            keys[path] = digest.hexdigest()[:16]
            visiting.discard(path)
        return keys[path]

    def _assets_used_by(self, blend: Path) -> set[Path]:
        return {asset for asset in self._new_location_paths for usage in self._actions[asset].usages
                if Path(usage.block.bfile.filepath).absolute() == blend}

    def _apply_rewrites_to_blendfile(self, bfile: blendfile.BlendFile, action: pack.AssetAction) -> None:
        """BAT's rewrite, except for paths held by a ``char *`` (a node bake's folder): BAT 1.23 writes those
        over the pointer itself, which Blender then cannot follow, so here the string it points to is rewritten.
        ``prepare`` leaves room for the new, shorter path (``session.absolute_cache_folders``)."""
        pointed = [u for u in action.rewrites if u.path_full_field is not None and u.path_full_field.name.is_pointer]
        kept = action.rewrites
        action.rewrites = [u for u in kept if all(u is not p for p in pointed)]
        try:
            super()._apply_rewrites_to_blendfile(bfile, action)
        finally:
            action.rewrites = kept
        for usage in pointed:
            relative = bytes(bpathlib.BlendPath.mkrelative(self._actions[usage.abspath].new_path, action.new_path))
            block = bfile.dereference_pointer(usage.block.addr_old)
            text = bfile.dereference_pointer(block.get(usage.path_full_field.name.name_only))
            if len(relative) + 1 > text.size:
                raise RuntimeError(f"no room for {relative!r} in {usage.block_name!r}")
            bfile.mark_modified()
            bfile.fileobj.seek(text.file_offset)
            bfile.fileobj.write(relative.ljust(text.size, b"\0"))

    def _write_info_file(self) -> None:
        """No ``pack-info.txt``: the job folder's readers are the farm's pipelines."""

    def _create_file_transferer(self) -> transfer.FileTransferer:
        return _NoTransfer()

    def _send_to_target(self, asset_path: Path, target: Path, may_move: bool = False) -> None:
        self.sends[Path(target)] = Path(asset_path)


class _NoTransfer(transfer.FileTransferer):
    """``carry`` places the files itself, through the store; BAT's thread has nothing to do."""

    def run(self) -> None:
        for _ in self.iter_queue():
            pass


def _asset_files(path: Path, usages: list[result.BlockUsage]) -> list[Path]:
    if any(u.is_sequence for u in usages):
        return sorted(_sequence_files(path))
    return [path]


def _sequence_files(path: Path) -> list[Path]:
    try:
        return [p for p in file_sequence.expand_sequence(path) if p.is_file()]
    except file_sequence.DoesNotExist:
        return []


_KINDS = {b"IM": "image", b"MC": "movie clip", b"VO": "volume", b"CF": "cache file", b"LI": "library",
          b"SO": "sound", b"VF": "font", b"ME": "mesh", b"OB": "object", b"SC": "scene", b"LA": "light"}


def _describe(usage: result.BlockUsage, users: dict[str, str]) -> str:
    """``image "Wood" of material "Table"``: the data-block that uses a file, as the artist sees it."""
    name = usage.block_name.decode(errors="replace")
    if name in users:
        return users[name]
    kind = _KINDS.get(usage.block_name[:2], "data-block")
    return f'{kind} "{name[2:]}"' if usage.block_name[:2] in _KINDS else f'{kind} "{name}"'


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f}"

