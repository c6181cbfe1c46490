"""``farm``: render a .blend on the local farm or on Pachyderm, from a terminal.

Exit codes: 0 done, 1 the farm failed (named tiles or frames), 2 bad input.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from farm_pipelines import cluster_commands
from farm_pipelines.errors import BadInput, FarmFailure
from farm_pipelines.events import Caution, Detail
from farm_pipelines.job import FORMATS, JobSettings, TileSize, parse_frames, parse_tile
from farm_pipelines.local import cache
from farm_pipelines.local.farm import default_state_dir
from farm_pipelines.submission import render
from farm_pipelines.terminal_progress import TerminalProgress


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise BadInput(f"{message} (see '{self.prog} --help')")


def _positive_int(text: str) -> int:
    digits = text.strip().lstrip("-")
    if not (digits.isascii() and digits.isdigit()) or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number above 0")
    return int(text)


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of days, 0 or more")
    return days


def _folder(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: name a folder")
    return Path(text)


#: Options whose value may start with ``-`` (a negative frame range such as ``-3--1``).
_NEGATIVE_VALUES = ("--frames",)


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--frames -3--1`` as ``--frames=-3--1``: argparse takes a value starting with ``-`` for an option."""
    joined: list[str] = []
    values = iter(argv)
    for arg in values:
        if arg in _NEGATIVE_VALUES:
            value = next(values, None)
            if value is not None and value.startswith("-") and value[1:2].isdigit():
                joined.append(f"{arg}={value}")
                continue
            joined.append(arg)
            if value is not None:
                joined.append(value)
            continue
        joined.append(arg)
    return joined


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="farm", description="Render Blender scenes as tiles on a farm.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = commands.add_parser("render", help="render a .blend into numbered frames")
    r.add_argument("blend", type=Path, help="the scene to render")
    size = r.add_mutually_exclusive_group()
    size.add_argument("--tile", default="64",
                      help="tile size: N (square), WxH, or auto (chosen from frame size, frame count and "
                           "workers; FARM_TILE_OVERHEAD_S sets the per-tile cost it assumes); default 64")
    size.add_argument("--whole-frame", action="store_true", help="one tile per frame")
    r.add_argument("--frames", help="A-B or A (default: the scene's frame range)")
    r.add_argument("--step", type=_positive_int, help="render every Nth frame (default: the scene's frame step)")
    r.add_argument("--workers", type=_positive_int,
                   help="local workers (default: one per GPU Cycles finds, and one per remaining core)")
    r.add_argument("--gpu-backend", metavar="BACKEND",
                   help="what the local farm renders GPU scenes with: auto (OptiX, then CUDA, HIP, oneAPI, Metal), "
                        "one of those, or CPU; default FARM_GPU_BACKEND, else auto. CPU scenes stay on the CPU")
    r.add_argument("--format", choices=sorted(FORMATS), help="output format (default: the scene's)")
    r.add_argument("--overscan", type=int, default=0, help="extra pixels rendered around each tile")
    r.add_argument("--sample-chunks", type=_positive_int, default=1,
                   help="split each frame's samples over K workers (Cycles; adaptive sampling is turned off)")
    r.add_argument("--strict", action="store_true", help="fail if the scene refers to missing files")
    r.add_argument("--out", type=_folder, required=True, help="folder for the frames")
    r.add_argument("--pachd", help="render on Pachyderm at grpc://HOST:PORT instead of this machine "
                                   "(token from FARM_PACHD_TOKEN)")
    r.add_argument("--state-dir", type=_folder, help="local farm state (default: FARM_STATE_DIR or ~/.cache)")
    r.set_defaults(func=_render)
    cluster_commands.add_commands(commands)
    _add_local_clean(commands.choices["clean"])
    return parser


def _add_local_clean(clean: argparse.ArgumentParser) -> None:
    """``farm clean`` cleans the local farm's state; ``farm clean JOB [--pachd]`` stays the cluster's."""
    clean.description = ("Local farm: reclaim disk space in its state (one of --job, --older-than, --all, "
                         "--limit; --list names the jobs). Never touches a job a render is running. "
                         "With JOB (and --pachd): remove a job from a Pachyderm cluster's repos.")
    for action in clean._actions:
        if action.dest == "job":  # the cluster's JOB, optional now that the local options exist
            action.nargs, action.default = "?", None
            action.help = "a job on a Pachyderm cluster (as `farm jobs` shows it): remove it from the cluster's repos"
    what = clean.add_mutually_exclusive_group()
    what.add_argument("--job", dest="local_job", metavar="NAME",
                      help="local: remove a job's prepared folder, repos, logs and stored datums")
    what.add_argument("--older-than", type=_days, metavar="DAYS", help="local: remove everything unused for DAYS")
    what.add_argument("--all", action="store_true", help="local: remove every job's files")
    what.add_argument("--limit", metavar="SIZE", help="local: remove least recently used work until the state "
                                                      "fits in SIZE (20G, 500M; default FARM_CACHE_LIMIT)")
    what.add_argument("--list", action="store_true", help="local: name the jobs, oldest use first")
    clean.add_argument("--state-dir", type=_folder, help="local farm state (default: FARM_STATE_DIR or ~/.cache)")
    clean.set_defaults(func=_clean)


def _clean(args: argparse.Namespace) -> int:
    local = args.local_job is not None or args.older_than is not None or args.all or args.limit or args.list
    if args.job is not None or args.pachd:
        if local or args.state_dir:
            raise BadInput("farm clean JOB is for a Pachyderm cluster; the local options (--job, --older-than, "
                           "--all, --limit, --list, --state-dir) take no JOB")
        return cluster_commands.clean_command(args)
    if not local:
        raise BadInput("say what to clean: --job NAME, --older-than DAYS, --all or --limit SIZE "
                       "(farm clean --list names the jobs)")
    state = args.state_dir or default_state_dir()
    if not state.is_dir():
        raise BadInput(f"{state}: no local farm state there; choose --state-dir or FARM_STATE_DIR")
    if args.list:
        for line in cache.job_summaries(state):
            print(line)
        return 0
    limit = None
    if args.limit:
        limit = cache.parse_size(args.limit)
        if limit is None:
            raise BadInput("--limit none removes nothing; give a size such as 20G")
    cleaned = cache.clean(state, job=args.local_job, older_than_days=args.older_than, everything=args.all,
                          limit=limit)
    for line in cleaned.lines():
        print(line)
    return 1 if args.local_job in cleaned.skipped else 0


def settings_from(args: argparse.Namespace) -> JobSettings:
    tile = TileSize() if args.whole_frame else parse_tile(args.tile)
    if args.overscan < 0:
        raise BadInput(f"overscan {args.overscan} must be 0 or more")
    return JobSettings(tile=tile, frames=parse_frames(args.frames, args.step),
                       file_format=FORMATS[args.format] if args.format else None,
                       overscan=args.overscan, strict=args.strict, sample_chunks=args.sample_chunks)


def _render(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    bar = TerminalProgress()
    try:  # closed on failure too, so the error line is a line of its own on a terminal
        backend = cluster_commands.backend_from_args(
            args, log=lambda message: bar.event(Detail(message)),
            warn=lambda message: bar.event(Caution(message))) if args.pachd else None
        frames = render(args.blend, settings, args.out, backend=backend, workers=args.workers,
                        on_event=bar.event, state_dir=args.state_dir, gpu_backend=args.gpu_backend)
    finally:
        bar.finish()
    print(f"{len(frames)} frame(s) written to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(_join_negative_values(sys.argv[1:] if argv is None else argv))
        return args.func(args)
    except BadInput as error:
        print(f"farm: error: {error}", file=sys.stderr)
        return 2
    except FarmFailure as error:
        print(f"farm: failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("farm: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as error:  # the machine, not the input: a full or read-only disk, a missing binary
        where = f" ({error.filename})" if error.filename else ""
        print(f"farm: failed: {error.strerror or error}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
