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
import shutil
import struct
from collections import defaultdict
from pathlib import Path

from blender_asset_tracer import blendfile, bpathlib, pack, trace
from blender_asset_tracer.blendfile import exceptions
from blender_asset_tracer.pack import transfer
from blender_asset_tracer.trace import file_sequence, result

from farm_pipelines import job_folder
from farm_pipelines.carried import Carried, CarriedFile
from farm_pipelines.carry_rules import farm_output, inside, real, refused_folder, regular, windows_only
from farm_pipelines.file_store import FileStore

#: What reading a truncated or foreign file makes BAT raise.
_UNREADABLE = (OSError, EOFError, ValueError, struct.error, exceptions.BlendFileError, exceptions.SegmentationFault)


def carry(blend: Path, destination: Path, store: FileStore, users: dict[str, str],
          source_folder: Path | None = None, out_dir: Path | None = None) -> Carried:
    """Write ``destination`` (``blend`` with its paths rewritten) and every file it needs beside it.

    ``users`` names each data-block's users (``prepare`` reports them: ``"IMWood"`` ->
    ``image "Wood" of material "Table"``), so that a missing file says what uses it.
    ``source_folder`` is the folder of the scene the artist submitted (``blend`` may be a
    copy elsewhere): no bake folder that holds it is carried, and the summary counts the
    files from outside it. Nothing under ``out_dir`` (where the farm delivers this job's frames, which
    the add-on shows as images) is carried, nor named missing: the blend names ``files/not-carried/``.
    """
    carried = Carried()
    scene_dir = Path(destination).parent
    guarded = [Path(blend).parent, scene_dir] + ([Path(source_folder)] if source_folder else [])
    unreadable = _unreadable_libraries(Path(blend))
    for path, (block_name, reason) in sorted(unreadable.items()):
        carried.missing.append(f"{path} (cannot be read: {reason}) ({_describe(block_name, users)})")
    traced = _without_libraries(Path(blend), unreadable) if unreadable else Path(blend)
    packer = _JobPacker(traced, scene_dir, store, guarded, out_dir)
    try:
        packer.strategise()
        packer.execute()
        for target, source in packer.sends.items():
            relative = target.relative_to(scene_dir).as_posix()
            if target == Path(packer.output_path):  # the blend itself, whatever the copy was called
                scene_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, destination)
                continue
            sha256, new = store.put(source, packer.hashes.get(source))
            store.link(sha256, target)
            carried.files.append(CarriedFile(relative, sha256, target.stat().st_size, new))
            if source_folder and not inside(source, Path(source_folder)):
                carried.outside += 1
    finally:
        packer.close()
        blendfile.close_all_cached()
        if traced != Path(blend):
            traced.unlink(missing_ok=True)
    for path, usages in sorted(packer.missing_usages.items()):
        carried.missing.append(f"{path} ({', '.join(sorted({_describe(u.block_name, users) for u in usages}))})")
    carried.files.sort(key=lambda f: f.path)
    return carried


class _JobPacker(pack.Packer):
    """BAT's packer with the job folder's layout, files sent through the store, and users of missing files."""

    def __init__(self, blend: Path, scene_dir: Path, store: FileStore, guarded: list[Path],
                 out_dir: Path | None) -> None:
        super().__init__(blend, blend.parent, str(scene_dir))
        self.store = store
        self.guarded = [real(p) for p in guarded]
        self.out_dir = out_dir
        self.sends: dict[Path, Path] = {}  # target -> source; BAT sends a sequence's first file twice
        self.hashes: dict[Path, str] = {}
        self.missing_usages: dict[str, list[result.BlockUsage]] = defaultdict(list)
        self.pointed: dict[int, tuple[int, int]] = {}  # id(usage) -> (address, size) of its ``char *`` path

    def _visit_asset(self, asset_path: Path, usage: result.BlockUsage) -> None:
        if asset_path.name.endswith(_UNREADABLE_SUFFIX):  # named by ``carry`` already
            return
        if windows_only(bytes(usage.asset_path)):
            self._missing(usage, f"{usage.asset_path.decode(errors='replace')} (a Windows path)")
            return
        if farm_output(asset_path, self.out_dir):
            self._point_away(asset_path, usage)
            return
        if not usage.is_sequence and not asset_path.exists():
            self._missing(usage, str(asset_path))
            return
        if not usage.is_sequence and not regular(asset_path):
            self._missing(usage, f"{asset_path} (not a regular file)")
            self._point_away(asset_path, usage)
            return
        self._remember_pointer(usage)
        super()._visit_asset(asset_path, usage)

    def _visit_sequence(self, asset_path: Path, usage: result.BlockUsage) -> None:
        if windows_only(bytes(usage.asset_path)):
            self._missing(usage, f"{usage.asset_path.decode(errors='replace')} (a Windows path)")
            return
        if farm_output(asset_path, self.out_dir):  # the add-on's growing sequence of finished frames
            self._point_away(asset_path, usage)
            return
        if asset_path.is_dir() and (reason := refused_folder(asset_path, self.guarded)):
            self._missing(usage, f"{asset_path} ({reason}; give the bake a folder of its own)")
            return
        if not _sequence_files(asset_path):
            if b".bakes[" not in usage.block_name:  # an unbaked node bake has no folder: Blender computes it
                self._missing(usage, str(asset_path))
            return
        super()._visit_sequence(asset_path, usage)

    def _point_away(self, asset_path: Path, usage: result.BlockUsage) -> None:
        """The job's blend names ``files/not-carried/<name>`` instead, which does not exist: a renderer that
        opened the pipe or device itself could wait on it for ever, and one that opened the farm's output
        would read another job's frames. Nothing is copied there (``_send_to_target``)."""
        action = self._actions[asset_path]
        action.usages.append(usage)
        action.path_action = pack.PathAction.FIND_NEW_LOCATION
        action.new_path = Path(self._target_path, job_folder.FILES, job_folder.NOT_CARRIED, asset_path.name)

    def _remember_pointer(self, usage: result.BlockUsage) -> None:
        """A ``char *`` path's address and room, read now: BAT's blocks for a node modifier's bakes are one
        object that later holds the last bake, and the copy's block at the array's address is the first bake."""
        named = usage.path_full_field
        if named is not None and named.name.is_pointer:
            address = usage.block.get(named.name.name_only)
            text = usage.block.bfile.dereference_pointer(address)
            self.pointed[id(usage)] = (address, text.size if text is not None else 0)

    def _missing(self, usage: result.BlockUsage, shown: str) -> None:
        self.missing_usages[shown].append(usage)

    def _find_new_paths(self) -> None:
        """``files/<key>/<name>`` for every asset; ``key`` covers the asset and what it refers to."""
        self._trace_libraries()
        keys: dict[Path, str] = {}
        for path in self._new_location_paths:
            self._actions[path].new_path = Path(self._target_path, job_folder.FILES, self._key(path, keys, set()),
                                                path.name)
        self._drop_paths_without_room()

    def _drop_paths_without_room(self) -> None:
        """A ``char *`` path (a node bake's folder) is rewritten in place: one whose new path does not fit
        (a library's bake, which ``prepare`` could not lengthen) stays as it was, and is named missing."""
        for path in sorted(self._new_location_paths):
            action = self._actions[path]
            for usage in list(action.usages):
                if id(usage) not in self.pointed:
                    continue
                holder = self._actions[bpathlib.make_absolute(usage.block.bfile.filepath)].new_path
                if len(self._relative(path, holder)) + 1 > self.pointed[id(usage)][1]:
                    action.usages.remove(usage)
                    self._missing(usage, f"{path} (no room to rewrite its path in "
                                         f"{Path(usage.block.bfile.filepath).name}; bake it in the main scene)")
            if not action.usages:
                self._new_location_paths.discard(path)
                del self._actions[path]

    def _relative(self, asset: Path, holder: Path) -> bytes:
        return bytes(bpathlib.BlendPath.mkrelative(self._actions[asset].new_path, holder))

    def _trace_libraries(self) -> None:
        """Trace every carried library whole, and the libraries those link.

        BAT follows a library only through the placeholders of linked data-blocks that the
        linking file holds, which files saved by Blender 5.0 no longer write as ``ID`` blocks: a
        linked material's texture was never found. Tracing the library file itself finds it (and
        any other file the library uses, linked or not).
        """
        traced: set[Path] = set()
        while todo := [p for p in sorted(self._new_location_paths) if p not in traced
                       and any(u.block_name[:2] == b"LI" for u in self._actions[p].usages)]:
            for library in todo:
                traced.add(library)
                try:
                    usages = list(trace.deps(library))
                except _UNREADABLE as error:  # truncated, or not a blend: named, and not carried
                    for usage in self._actions.pop(library).usages:
                        self._missing(usage, f"{library} (cannot be read: {error or type(error).__name__})")
                    self._new_location_paths.discard(library)
                    continue
                for usage in usages:
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
            relative = self._relative(usage.abspath, action.new_path)
            text = bfile.dereference_pointer(self.pointed[id(usage)][0])  # the same address in the copy
            bfile.mark_modified()
            bfile.fileobj.seek(text.file_offset)
            bfile.fileobj.write(relative.ljust(text.size, b"\0"))

    def _write_info_file(self) -> None:
        """No ``pack-info.txt``: the job folder's readers are the farm's pipelines."""

    def _create_file_transferer(self) -> transfer.FileTransferer:
        return _NoTransfer()

    def _send_to_target(self, asset_path: Path, target: Path, may_move: bool = False) -> None:
        if Path(target).parent == Path(self._target_path, job_folder.FILES, job_folder.NOT_CARRIED):
            return  # pointed away: the farm's output, or a pipe or a device
        if regular(Path(asset_path)):  # a sequence's pattern may also match a folder or a pipe
            self.sends[Path(target)] = Path(asset_path)


class _NoTransfer(transfer.FileTransferer):
    """``carry`` places the files itself, through the store; BAT's thread has nothing to do."""

    def run(self) -> None:
        for _ in self.iter_queue():
            pass


def libraries_that_are_not_files(blend: Path) -> list[Path]:
    """The libraries ``blend`` links that are pipes or devices: Blender, opening ``blend``, would wait on one
    for ever, so ``prepare`` refuses them first. Read with BAT, without Blender."""
    try:
        found = _unreadable_libraries(blend)
    except Exception:  # noqa: BLE001 - any file BAT cannot read (corrupt zstd too): Blender then says what is wrong
        return []
    return sorted(path for path, (_, reason) in found.items() if reason == _NOT_REGULAR)


def _unreadable_libraries(blend: Path) -> dict[Path, tuple[bytes, str]]:
    """The libraries ``blend`` links that BAT cannot read (truncated, not a blend, a pipe): BAT's trace
    opens every library whose data-blocks are linked, and one it cannot read would end the trace."""
    found: dict[Path, tuple[bytes, str]] = {}
    try:
        for block in blendfile.open_cached(blend).find_blocks_from_code(b"LI"):
            path = real(bpathlib.BlendPath(block[b"name"]).absolute(bpathlib.BlendPath(blend.parent)).to_path())
            if not path.exists():
                continue  # missing: named by the packer
            if not regular(path):
                found[path] = (block.id_name, _NOT_REGULAR)
                continue
            try:
                blendfile.open_cached(path)
            except _UNREADABLE as error:
                found[path] = (block.id_name, str(error).split(": /")[0] or type(error).__name__)
    finally:
        blendfile.close_all_cached()
    return found


def _without_libraries(blend: Path, unreadable: dict[Path, tuple[bytes, str]]) -> Path:
    """A copy of ``blend`` beside it whose unreadable libraries name files that do not exist, so BAT's
    trace passes them by; the job's blend is written from it, and such a library is missing there too."""
    copy = blend.with_name(f".{blend.stem}.traced.blend")
    shutil.copyfile(blend, copy)
    try:
        bfile = blendfile.open_cached(copy, mode="r+b")
        for block in bfile.find_blocks_from_code(b"LI"):
            path = real(bpathlib.BlendPath(block[b"name"]).absolute(bpathlib.BlendPath(blend.parent)).to_path())
            if path in unreadable:
                block.set(b"name", bytes(block[b"name"]) + _UNREADABLE_SUFFIX.encode())
    finally:
        blendfile.close_all_cached()
    return copy


_UNREADABLE_SUFFIX = ".unreadable"
_NOT_REGULAR = "not a regular file"


def _asset_files(path: Path, usages: list[result.BlockUsage]) -> list[Path]:
    if any(u.is_sequence for u in usages):
        return sorted(_sequence_files(path))
    return [path]


def _sequence_files(path: Path) -> list[Path]:
    try:
        return [p for p in file_sequence.expand_sequence(path) if regular(p)]
    except file_sequence.DoesNotExist:
        return []


_KINDS = {b"IM": "image", b"MC": "movie clip", b"VO": "volume", b"CF": "cache file", b"LI": "library",
          b"SO": "sound", b"VF": "font", b"ME": "mesh", b"OB": "object", b"SC": "scene", b"LA": "light"}


def _describe(block_name: bytes, users: dict[str, str]) -> str:
    """``image "Wood" of material "Table"``: the data-block that uses a file, as the artist sees it."""
    name = block_name.decode(errors="replace")
    if name in users:
        return users[name]
    kind = _KINDS.get(block_name[:2], "data-block")
    return f'{kind} "{name[2:]}"' if block_name[:2] in _KINDS else f'{kind} "{name}"'
