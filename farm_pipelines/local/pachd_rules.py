"""Pachyderm's own rules for naming datums and cutting datum sets, as the faithful farm follows them.

Each function follows one pachd function at tag v2.7.0 (``pachyderm/pachyderm``),
named in its docstring, so that code tested on the faithful farm sees the IDs and
the set boundaries a cluster would give it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path

from farm_pipelines.datums import Datum, DatumInput
from farm_pipelines.errors import FarmFailure

DEFAULT_DATUM_TRIES = 3  # src/server/pps/server/api_server.go, setPipelineDefaults (DefaultDatumTries)
DEFAULT_SETS_PER_WORKER = 4  # src/server/worker/pipeline/transform/registry.go, defaultDatumSetsPerWorker
BRANCH = "master"  # the local farm's repos have one branch, as the project's DAG uses on pachd


def new_id() -> str:
    """A commit-set (job) ID: a UUIDv4 without dashes, 32 lowercase hex.

    ``src/internal/transactionenv/txncontext/context.go``, ``New`` -> ``uuid.NewWithoutDashes``;
    the job and every commit of the set share it (``pfs/server/driver.go``, ``propagateBranches``).
    """
    return uuid.uuid4().hex


def datum_path(item: DatumInput, repos_root: Path) -> str:
    """The datum input's file path as pachd holds it: a directory's ends in ``/``."""
    return item.path + "/" if item.source(repos_root).is_dir() and not item.path.endswith("/") else item.path


def sorted_inputs(datum: Datum) -> tuple[DatumInput, ...]:
    """Inputs in name order: ``src/pps/util.go``, ``SortInput``, run by ``setInputDefaults``."""
    return tuple(sorted(datum.inputs, key=lambda item: item.name))


def pachd_datum_id(datum: Datum, repos_root: Path) -> str:
    """``PACH_DATUM_ID``: ``src/server/worker/common/common.go``, ``DatumID``.

    BLAKE2b-256 (``src/internal/pachhash/hash.go``, ``New``) over each input's name,
    repo, branch and path, each followed by its length as a big-endian int64: a
    hash of paths, never of contents.
    """
    digest = hashlib.blake2b(digest_size=32)
    for item in sorted_inputs(datum):
        for part in (item.name, item.repo, BRANCH, datum_path(item, repos_root)):
            data = part.encode()
            digest.update(data)
            digest.update(len(data).to_bytes(8, "big", signed=True))
    return digest.hexdigest()


def hash_datum(salt: str, datum: Datum, repos_root: Path, content_hash: Callable[[DatumInput], str]) -> str:
    """The skip identity: ``common.go``, ``HashDatum`` = BLAKE2b(datum ID, each input's hash, salt).

    ``content_hash`` stands in for pachd's ``FileInfo.Hash`` (a content hash of the
    file or of the directory's tree); any content hash gives the same skipping.
    """
    digest = hashlib.blake2b(digest_size=32)
    digest.update(pachd_datum_id(datum, repos_root).encode())
    for item in sorted_inputs(datum):
        digest.update(content_hash(item).encode())
    digest.update(salt.encode())
    return digest.hexdigest()


def set_spec(spec: dict, datums_to_process: int, workers: int) -> tuple[int, int]:
    """(number, size_bytes) of each datum set: ``registry.go``, ``createSetSpec``.

    ``datum_set_spec.number`` or ``size_bytes`` if either is non-zero; otherwise
    ``datums to process / (workers * per_worker)``, at least 1, where ``per_worker``
    is 4 when ``datum_set_spec`` is absent and the spec's own value when present.
    """
    given = spec.get("datum_set_spec")
    number = int((given or {}).get("number", 0))
    size_bytes = int((given or {}).get("size_bytes", 0))
    if number or size_bytes:
        return number, size_bytes
    per_worker = int(given.get("per_worker", 0)) if given is not None else DEFAULT_SETS_PER_WORKER
    if per_worker <= 0:  # pachd divides by zero here; say what to write instead
        raise FarmFailure(f"pipeline {spec['pipeline']['name']}: datum_set_spec has no number, size_bytes or "
                          "per_worker; leave it out or set one of them")
    return max(1, datums_to_process // (workers * per_worker)), 0


def cut_sets(datums: list, sizes: list[int], number: int, size_bytes: int) -> list[list]:
    """Contiguous datum sets: ``src/server/worker/datum/datum.go``, ``shouldCreateSetFunc``.

    A new set starts once the current one holds ``number`` datums, or once the
    input bytes added so far (every input of every datum, ``FileInfo.SizeBytes``)
    reach ``size_bytes``, checked before adding the next datum.
    """
    sets: list[list] = []
    count, size = 0, 0
    for datum, datum_size in zip(datums, sizes, strict=True):
        full = size >= size_bytes if size_bytes > 0 else count >= max(number, 1)
        if not sets or full:
            sets.append([])
            count, size = 0, 0
        sets[-1].append(datum)
        count += 1
        size += datum_size
    return sets
