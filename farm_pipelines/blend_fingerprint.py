"""A .blend's fingerprint by what it renders, not by the bytes of one session's save.

Two saves of the same scene differ in bytes a render never reads: the window
manager, screens and workspaces (which area is active, the zoom), the file's own
path and thumbnail, the garbage after a string's end and in padding, ID bookkeeping (user counts,
preview icons, runtime tags) and, in principle, every pointer, which is a memory
address of the session that saved it. So the file is read block by block with
Blender Asset Tracer's DNA reader (no Blender): UI blocks and the data that follows
them are left out, each pointer is replaced by the ordinal of the block it points
into, volatile fields are zeroed, and what is left is hashed.

Also left out: images no render can read, a Render Result or Viewer image (a session
has one after an F12 render) and those whose path ``skip_image`` matches (the farm's
own output frames, which ``dependencies`` never carries), and the previews a session
draws for the UI. A pointer to a left-out block reads as null, and left-out blocks
take no ordinal, so one session's extra preview never shifts the other blocks.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from collections.abc import Callable
from pathlib import Path

from blender_asset_tracer import blendfile
from blender_asset_tracer.blendfile import exceptions

#: Blocks of the user interface, with the DATA blocks written after each (areas, regions, spaces).
_UI_CODES = {b"WM", b"SN", b"SR", b"WS"}  # screens are SN blocks of SR IDs
#: The thumbnail, and the block that ends the file.
_SKIPPED_CODES = {b"TEST", b"ENDB"}
#: ``FileGlobal`` fields that render: the scene it opens on, the Blender that wrote it, its colour space.
_GLOBAL_FIELDS = (b"subversion", b"minversion", b"minsubversion", b"curscene", b"cur_view_layer",
                  b"build_commit_timestamp", b"build_hash", b"colorspace_scene_linear_name",
                  b"colorspace_scene_linear_to_xyz")
#: Fields a session changes without changing what renders: an ID's users, icon and runtime state, an
#: image's GPU and last-use bookkeeping, and a node's identifier, drawn at random when an older file
#: is loaded (the links between nodes are pointers, which are compared).
_VOLATILE_FIELDS = {
    b"ID": {b"us", b"icon_id", b"tag", b"recalc", b"recalc_up_to_undo_push", b"recalc_after_undo_push",
            b"session_uid", b"py_instance", b"orig_id", b"runtime"},
    b"Image": {b"lastused", b"lastframe", b"gpuframenr", b"gpuflag", b"gpu_pass", b"gpu_layer", b"gpu_view"},
    b"bNode": {b"identifier"},
}
#: ``Image.type`` of a Render Result and of the compositor's Viewer (DNA_image_types.h, ``eImageType``).
_SESSION_IMAGE_TYPES = {4, 5}
#: What reading a damaged or foreign file raises.
UNREADABLE = (OSError, EOFError, ValueError, KeyError, IndexError, struct.error, NotImplementedError,
              exceptions.BlendFileError, exceptions.SegmentationFault)
_NULL, _DANGLING = 0, 0xFFFF_FFFF_FFFF_FFFF


def fingerprint(blend: Path, skip_image: Callable[[bytes], bool] | None = None) -> str:
    """SHA-256 of ``blend``'s rendering content; the same for every session's save of the same scene.

    ``skip_image`` gets an image's path as stored (``//files/...``) and says whether the image is
    one no render reads. Raises one of ``UNREADABLE`` for a file that is not a readable .blend.
    """
    bfile = blendfile.BlendFile(Path(blend))
    try:
        return _Canonical(bfile, skip_image or (lambda path: False)).digest()
    finally:
        bfile.close()


class _Canonical:
    """One file's blocks, kept or left out, and its pointers as ordinals of the kept blocks."""

    def __init__(self, bfile: blendfile.BlendFile, skip_image: Callable[[bytes], bool]) -> None:
        self.bfile = bfile
        self.pointer = struct.Struct("<Q" if bfile.header.pointer_size == 8 else "<I")
        self.kept = self._kept_blocks(skip_image)
        ordinals = {id(block): number for number, block in enumerate(self.kept, start=1)}
        spans = sorted((block.addr_old, block.size, ordinals.get(id(block))) for block in bfile.blocks
                       if block.addr_old and block.code != b"ENDB")
        self.starts = [span[0] for span in spans]
        self.spans = spans
        self.offsets: dict[int, tuple[list[int], list[tuple[int, int]], list[tuple[int, int]]]] = {}

    def _kept_blocks(self, skip_image: Callable[[bytes], bool]) -> list[blendfile.BlendFileBlock]:
        kept, skipping, pixels = [], False, set()
        for block in self.bfile.blocks:
            if block.code != b"DATA":  # a new data-block (or a file-level block) starts
                skipping = block.code in _UI_CODES or block.code in _SKIPPED_CODES or (
                    block.code == b"IM" and self._session_image(block, skip_image))
            if block.code == b"DATA" and self.bfile.structs[block.sdna_index].dna_type_id == b"PreviewImage":
                pixels.update(block.get((b"rect", index)) for index in range(2))  # the preview's pixels
                continue
            if not skipping and not (block.addr_old and block.addr_old in pixels):
                kept.append(block)
        return kept

    @staticmethod
    def _session_image(block: blendfile.BlendFileBlock, skip_image: Callable[[bytes], bool]) -> bool:
        return block.get(b"type") in _SESSION_IMAGE_TYPES or skip_image(block.get(b"name", as_str=False))  # its path

    def digest(self) -> str:
        digest = hashlib.sha256()
        for block in self.kept:
            data = self._canonical(block)
            digest.update(b"%s\0%d\0%d\0" % (block.code, block.count, len(data)))
            digest.update(data)
        return digest.hexdigest()

    def _canonical(self, block: blendfile.BlendFileBlock) -> bytes:
        raw = bytearray(block.raw_data())
        if block.code == b"GLOB":
            return self._global(block, raw)
        dna = self.bfile.structs[block.sdna_index]
        typed = block.sdna_index != 0 and block.count * dna.size == block.size
        if not typed:  # raw data: an array of pointers (``Material **mat``) if every word is one
            self._pointer_array(raw)
            return bytes(raw)
        pointers, volatile, strings = self._struct_offsets(block.sdna_index)
        for item in range(block.count):
            base = item * dna.size
            for offset in pointers:
                self._replace(raw, base + offset)
            for offset, size in volatile:
                raw[base + offset:base + offset + size] = bytes(size)
            for offset, size in strings:  # what follows a string's end is whatever the memory held
                end = raw.find(0, base + offset, base + offset + size)
                if end != -1:
                    raw[end:base + offset + size] = bytes(base + offset + size - end)
        return dna.dna_type_id + b"\0" + bytes(raw)

    def _global(self, block: blendfile.BlendFileBlock, raw: bytearray) -> bytes:
        """Only the fields that render: not the file's path, its screen, or what follows a string's end."""
        fields = {field.name.name_only: field for field in self.bfile.structs[block.sdna_index].fields}
        out = bytearray()
        for name in _GLOBAL_FIELDS:
            field = fields.get(name)
            if field is None:
                continue
            value = bytearray(raw[field.offset:field.offset + field.size])
            if field.name.is_pointer:
                self._replace(value, 0)
            elif field.dna_type.dna_type_id == b"char":
                value = value.split(b"\0", 1)[0]
            out += name + b"=" + value + b"\0"
        return bytes(out)

    def _pointer_array(self, raw: bytearray) -> None:
        size = self.pointer.size
        if not raw or len(raw) % size:
            return
        pointed = False
        for (value,) in self.pointer.iter_unpack(raw):  # stops at the first word that is no pointer
            if value:
                if self._span(value) is None:
                    return
                pointed = True
        if pointed:
            for offset in range(0, len(raw), size):
                self._replace(raw, offset)

    def _replace(self, raw: bytearray, offset: int) -> None:
        """The pointer at ``offset`` becomes the ordinal of the block it points into and where in it."""
        (address,) = self.pointer.unpack_from(raw, offset)
        if address == _NULL:
            return
        span = self._span(address)
        if span is None:
            value = _DANGLING
        elif span[2] is None:  # a session's own (a preview, the UI): as if it had none
            value = _NULL
        else:
            value = (span[2] << 32) | (address - span[0])
        self.pointer.pack_into(raw, offset, value & ((1 << 8 * self.pointer.size) - 1))

    def _span(self, address: int) -> tuple[int, int, int | None] | None:
        index = bisect.bisect_right(self.starts, address) - 1
        if index < 0:
            return None
        start, size, ordinal = self.spans[index]
        return self.spans[index] if address < start + max(size, 1) else None

    def _struct_offsets(self, sdna_index: int) -> tuple[list[int], list[tuple[int, int]], list[tuple[int, int]]]:
        """Offsets of every pointer in a struct (nested structs and arrays included), and (offset, size)
        of its volatile fields and of its strings (``char`` arrays)."""
        if sdna_index not in self.offsets:
            found: tuple[list[int], list[tuple[int, int]], list[tuple[int, int]]] = ([], [], [])
            self._walk(self.bfile.structs[sdna_index], 0, found)
            self.offsets[sdna_index] = found
        return self.offsets[sdna_index]

    def _walk(self, dna: blendfile.dna.Struct, base: int,
              found: tuple[list[int], list[tuple[int, int]], list[tuple[int, int]]]) -> None:
        pointers, volatile, strings = found
        zeroed = _VOLATILE_FIELDS.get(dna.dna_type_id, set())
        for field in dna.fields:
            name = field.name
            if name.name_only in zeroed or name.name_only.startswith(b"_pad"):  # padding: garbage
                volatile.append((base + field.offset, field.size))
            elif name.is_pointer or name.is_method_pointer:
                pointers.extend(range(base + field.offset, base + field.offset + field.size, self.pointer.size))
            elif field.dna_type.dna_type_id == b"char" and name.array_size > 1:
                strings.append((base + field.offset, field.size))
            elif field.dna_type.fields:  # a struct inside the struct
                for index in range(name.array_size):
                    self._walk(field.dna_type, base + field.offset + index * field.dna_type.size, found)
