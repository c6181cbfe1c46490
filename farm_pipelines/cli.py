"""``farm``: render a .blend on the local farm or on Pachyderm, from a terminal.

Exit codes: 0 done, 1 the farm failed (named tiles or frames), 2 bad input.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from farm_pipelines import cluster_commands
from farm_pipelines.backend import Progress
from farm_pipelines.errors import BadInput, FarmFailure
from farm_pipelines.events import Caution, Detail, FarmEvent, Info, ProgressUpdate
from farm_pipelines.job import FORMATS, JobSettings, TileSize, parse_frames, parse_tile
from farm_pipelines.submission import render


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise BadInput(f"{message} (see '{self.prog} --help')")


def _positive_int(text: str) -> int:
    digits = text.strip().lstrip("-")
    if not (digits.isascii() and digits.isdigit()) or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number above 0")
    return int(text)


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
    r.add_argument("--step", type=_positive_int, default=1, help="render every Nth frame")
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
    r.add_argument("--out", type=Path, required=True, help="folder for the frames")
    r.add_argument("--pachd", help="render on Pachyderm at grpc://HOST:PORT instead of this machine "
                                   "(token from FARM_PACHD_TOKEN)")
    r.add_argument("--state-dir", type=Path, help="local farm state (default: FARM_STATE_DIR or ~/.cache)")
    r.set_defaults(func=_render)
    cluster_commands.add_commands(commands)
    return parser


def settings_from(args: argparse.Namespace) -> JobSettings:
    tile = TileSize() if args.whole_frame else parse_tile(args.tile)
    if args.overscan < 0:
        raise BadInput(f"overscan {args.overscan} must be 0 or more")
    return JobSettings(tile=tile, frames=parse_frames(args.frames, args.step),
                       file_format=FORMATS[args.format] if args.format else None,
                       overscan=args.overscan, strict=args.strict, sample_chunks=args.sample_chunks)


def _render(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    backend = cluster_commands.backend_from_args(args) if args.pachd else None
    bar = _ProgressBar()
    frames = render(args.blend, settings, args.out, backend=backend, workers=args.workers,
                    on_event=bar.event, state_dir=args.state_dir, gpu_backend=args.gpu_backend)
    bar.finish()
    print(f"{len(frames)} frame(s) written to {args.out}")
    return 0


class _ProgressBar:
    """One live line on a terminal; a line every few seconds when logging to a file."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._last = 0.0
        self._last_stage = ""
        self._shown = False

    def event(self, event: FarmEvent) -> None:
        if isinstance(event, Info | Detail):  # a terminal shows how the farm goes about the job too
            self._print(event.message, newline=True)
        elif isinstance(event, Caution):
            self._print(f"warning: {event.message}", newline=True)
        elif isinstance(event, ProgressUpdate):
            self._progress(event.progress)

    def _progress(self, p: Progress) -> None:
        now = time.monotonic()
        if not self.tty and p.stage == self._last_stage and now - self._last < 5:
            return
        self._last, self._last_stage = now, p.stage
        width = 24
        filled = int(width * p.fraction)
        eta = f" ETA {_duration(p.eta_seconds)}" if p.eta_seconds is not None else ""
        failed = f" ({p.tiles_failed} failed)" if p.tiles_failed else ""
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {p.stage:8} tiles {p.tiles_done}/{p.tiles_total}"
                f"{failed} frames {p.frames_merged}/{p.frames_total}{eta}")
        self._print(line, newline=not self.tty)

    def _print(self, text: str, newline: bool) -> None:
        if self.tty and self._shown and newline:
            sys.stderr.write("\n")
        sys.stderr.write(("\r\x1b[K" if self.tty else "") + text + ("\n" if newline else ""))
        sys.stderr.flush()
        self._shown = self.tty and not newline

    def finish(self) -> None:
        if self._shown:
            sys.stderr.write("\n")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
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
