"""Datum enumeration with Pachyderm's glob, join and cross semantics, over plain directories.

A repo is a directory. A glob matches files *and* directories at the depth it
names (``*`` never crosses ``/``, ``**`` does); each match becomes one datum
input. Parenthesised parts are capture groups for ``join_on``/``$1``. As in
pachd, ``*`` matches dotfiles too: ohmyglob's ``compiler.compile`` (v2.7.0,
used by ``src/server/pfs/server/paths.go``, ``globMatchFunction``) has no
dotfile rule. A join honours ``outer_join`` (``datum/worker.go``, ``processMergeTask``).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatumInput:
    name: str  # the input's name: its environment variable and /pfs/<name> directory
    repo: str
    path: str  # path inside the repo, with a leading "/"
    join_key: str = ""
    outer_join: bool = False

    def source(self, repos_root: Path) -> Path:
        return repos_root / self.repo / self.path.lstrip("/")


@dataclass(frozen=True)
class Datum:
    inputs: tuple[DatumInput, ...]

    def key(self) -> str:
        """Stable identity of the datum's inputs, regardless of content."""
        return "|".join(f"{i.name}:{i.path}" for i in self.inputs)


def glob_regex(glob: str) -> re.Pattern[str]:
    """Translate a Pachyderm glob into an anchored regex keeping its capture groups.

    ``[...]`` is a list or range of characters, negated by a leading ``!`` or ``^``, as
    pachd's glob library lexes it (github.com/pachyderm/ohmyglob ``syntax/lexer/lexer.go``,
    ``char_range_open`` and ``char_not_exclaim``/``char_not_caret``) and compiles it to a
    regex class (``compiler/compiler.go``, ``compile``, ``KindRange``/``KindList``).
    """
    out = []
    i = 0
    while i < len(glob):
        char = glob[i]
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "[" and "]" in glob[i + 2:]:  # a list or range, ``!`` or ``^`` negating it
            end = glob.index("]", i + 2)
            body = glob[i + 1:end]
            negate = body[:1] in ("!", "^")
            out.append("[" + ("^" if negate else "") + re.sub(r"([\\\]\[^])", r"\\\1", body[negate:]) + "]")
            i = end + 1
            continue
        out.append({"*": "[^/]*", "?": "[^/]", "(": "(", ")": ")"}.get(char, re.escape(char)))
        i += 1
    return re.compile("^" + "".join(out).rstrip("/") + "$")


def _walk(repo_dir: Path, scope: str) -> list[str]:
    """Every path (dirs and files) in a repo, ``/``-rooted; only under ``/<scope>`` if given; dotfiles included."""
    start = repo_dir / scope if scope else repo_dir
    if not start.exists():
        return []
    paths = ["/" + scope] if scope else []
    paths += ["/" + p.relative_to(repo_dir).as_posix() for p in start.rglob("*")]
    return sorted(paths)


def _pfs_inputs(spec: dict, repos_root: Path, scope: str) -> list[DatumInput]:
    pfs = spec["pfs"]
    name = pfs.get("name", pfs["repo"])
    pattern = glob_regex(pfs["glob"])
    join_on = pfs.get("join_on", "")
    found = []
    for path in _walk(repos_root / pfs["repo"], scope):
        match = pattern.match(path)
        if match:
            found.append(DatumInput(name, pfs["repo"], path, _join_key(join_on, match),
                                    bool(pfs.get("outer_join"))))
    return found


def _join_key(template: str, match: re.Match[str]) -> str:
    """``$1``-style substitution of a glob's capture groups, as ``join_on`` uses it."""
    return re.sub(r"\$(\d+)", lambda ref: match.group(int(ref.group(1))) or "", template)


def enumerate_datums(spec_input: dict, repos_root: Path, scope: str = "") -> list[Datum]:
    """All datums of a pipeline input; ``scope`` limits every repo to ``/<scope>`` (one job)."""
    if "pfs" in spec_input:
        return [Datum((i,)) for i in _pfs_inputs(spec_input, repos_root, scope)]
    if "cross" in spec_input:
        parts = [enumerate_datums(child, repos_root, scope) for child in spec_input["cross"]]
        return [Datum(tuple(itertools.chain.from_iterable(d.inputs for d in combo)))
                for combo in itertools.product(*parts)]
    if "union" in spec_input:
        return [d for child in spec_input["union"] for d in enumerate_datums(child, repos_root, scope)]
    if "join" in spec_input:
        return _join(spec_input["join"], repos_root, scope)
    raise ValueError(f"unsupported pipeline input: {sorted(spec_input)}")


def _join(children: list[dict], repos_root: Path, scope: str) -> list[Datum]:
    """For every join key, the cross product of the inputs' matches, as pachd's ``processMergeTask``.

    A key every input has keeps the whole product. A key some input lacks keeps
    only the inputs marked ``outer_join`` that have it (the others are dropped even
    if present), and no datum at all if none of them is outer (v2.7.0
    ``src/server/worker/datum/worker.go``, ``processMergeTask``).
    """
    by_key: list[dict[str, list[DatumInput]]] = []
    for child in children:
        if "pfs" not in child:
            raise ValueError("join inputs must be pfs inputs")
        groups: dict[str, list[DatumInput]] = {}
        for item in _pfs_inputs(child, repos_root, scope):
            groups.setdefault(item.join_key, []).append(item)
        by_key.append(groups)
    datums = []
    for key in sorted(set().union(*(set(g) for g in by_key))):
        present = [g[key] for g in by_key if key in g]
        if len(present) < len(by_key):
            present = [items for items in present if items[0].outer_join]
            if not present:
                continue
        datums += [Datum(combo) for combo in itertools.product(*present)]
    return datums


def datum_id(datum: Datum, repos_root: Path, salt: str, file_hash: Callable[[Path], str],
             listings: dict[Path, bytes] | None = None) -> str:
    """Content identity, as Pachyderm's: the same inputs and the same spec give the same id.

    ``listings`` caches each input's hashed file list for one enumeration: a job's
    blend folder is part of every one of its thousands of tile datums.
    """
    listings = {} if listings is None else listings
    digest = hashlib.sha256(salt.encode())
    for item in datum.inputs:
        digest.update(f"\0{item.name}\0{item.path}\0".encode())
        source = item.source(repos_root)
        if source not in listings:
            files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
            listings[source] = "".join(f"{path.relative_to(source.parent).as_posix()}\0{file_hash(path)}\0"
                                       for path in files).encode()
        digest.update(listings[source])
    return digest.hexdigest()[:32]
