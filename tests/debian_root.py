"""Minimal Debian systems for tests that need real binaries: Debian's own ``blender``, a Python 3.13, Xvfb.

``python3 tests/debian_root.py ensure SUITE`` (what ``build.py test`` runs) makes
``build/debian/SUITE`` with ``debootstrap`` when it is missing, then installs the
suite's packages with apt inside it. A stamp names the suite and package list, so
a change of either rebuilds it and an unchanged one costs nothing.

Everything runs in a private mount and PID namespace (``unshare``): ``/proc``,
``/sys`` and ``/dev`` are mounted into the root only for as long as the command
runs, and vanish with it, so no mount is ever left behind for an ``rm -rf
build/`` to follow into the host's ``/dev``; and when the command ends or is
killed (a timeout), every process it started inside dies with it. Needs root,
which the development machines and CI have.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOTS = ROOT / "build" / "debian"
MIRROR = "http://deb.debian.org/debian"

#: What each suite is for, and the packages the tests need from it.
#: Debian's blender does not pull in what Blender's extension manager imports
#: (numpy, requests, cattrs), so they are named; the farm needs numpy itself.
PACKAGES = {
    "sid": ["blender", "python3-numpy", "python3-requests", "python3-cattr", "xvfb", "xauth", "xdotool"],
    # python3 is 3.13 here: build.py's CLI set-up on it (a venv with bpy 5.2 from PyPI), and the
    # X11/GL libraries bpy's module links to, which a minimal system lacks; bpy 5.2 also loads
    # libEGL when it composites (the merger), and aborts without it.
    "trixie": ["python3", "python3-venv", "libx11-6", "libxrender1", "libxfixes3", "libxi6", "libxkbcommon0",
               "libsm6", "libgl1", "libegl1"],
}
#: The mirror serves a frozen snapshot whose Release files are past their Valid-Until date.
APT = ["apt-get", "-q", "-y", "-o", "Acquire::Check-Valid-Until=false", "-o", "APT::Install-Recommends=false"]


class RootUnavailable(RuntimeError):
    """The Debian root cannot be made here (no root rights, no debootstrap, no mirror)."""


def path(suite: str) -> Path:
    return ROOTS / suite


def _stamp_text(suite: str) -> str:
    return hashlib.sha256(repr((suite, MIRROR, PACKAGES[suite])).encode()).hexdigest() + "\n"


def ready(suite: str) -> bool:
    stamp = path(suite) / ".farm-root-ready"
    return stamp.exists() and stamp.read_text() == _stamp_text(suite)


def ensure(suite: str, log=print) -> Path:
    """Make ``build/debian/SUITE`` with its packages unless it is already there; returns its path.

    Built under a temporary name and renamed once complete, so an interrupted
    build is started over, never used half-made.
    """
    target = path(suite)
    if ready(suite):
        return target
    if os.geteuid() != 0:
        raise RootUnavailable("making a Debian root needs root rights (debootstrap and chroot)")
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise RootUnavailable("debootstrap is not installed: apt-get install debootstrap")
    started = time.monotonic()
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    log(f"making a Debian {suite} system in {target} (first run only, a few minutes) ...")
    subprocess.run([debootstrap, "--variant=minbase", suite, str(partial), MIRROR], check=True,
                   stdout=subprocess.DEVNULL)
    shutil.copy("/etc/resolv.conf", partial / "etc" / "resolv.conf")
    install = " && ".join([shlex.join([*APT, "update"]), shlex.join([*APT, "install", *PACKAGES[suite]]),
                           shlex.join([*APT, "clean"])])
    run(partial, ["sh", "-c", install], env={"DEBIAN_FRONTEND": "noninteractive"}, check=True,
        stdout=subprocess.DEVNULL)
    (partial / ".farm-root-ready").write_text(_stamp_text(suite))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    log(f"Debian {suite} system ready in {time.monotonic() - started:.0f} s")
    return target


def run(root: Path, argv: list[str], *, binds: tuple[Path, ...] = (), tmp: Path | None = None,
        env: dict[str, str] | None = None, timeout: float | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``argv`` inside ``root``; each of ``binds`` (host folders) appears at the same path inside.

    ``tmp``, a host folder, becomes the root's ``/tmp``, so that what one run leaves
    there (an X server's lock, Blender's temp folders) is its own to inspect.

    The environment is only ``env`` plus a PATH, HOME and locale, so nothing of the
    host's Python or Blender leaks in. On a timeout every process inside is killed.
    """
    root = Path(root).absolute()
    mounts = [f"mount --rbind /dev {shlex.quote(str(root / 'dev'))}",
              f"mount --rbind /sys {shlex.quote(str(root / 'sys'))}"]
    if tmp is not None:
        mounts.append(f"mount --bind {shlex.quote(str(Path(tmp).absolute()))} {shlex.quote(str(root / 'tmp'))}")
    for folder in binds:  # after /tmp: a folder under /tmp gets its mount point in the new /tmp
        folder = Path(folder).absolute()
        inside = shlex.quote(str(root / folder.relative_to("/")))
        mounts.append(f"mkdir -p {inside} && mount --bind {shlex.quote(str(folder))} {inside}")
    inner = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
             "LANG": "C.UTF-8", **(env or {})}
    command = " && ".join([*mounts, "exec chroot " + shlex.quote(str(root)) + " env -i "
                           + " ".join(shlex.quote(f"{key}={value}") for key, value in inner.items())
                           + " " + shlex.join(argv)])
    # --fork --pid --kill-child: the command is PID 1 of its own namespace, so when it ends or
    # unshare is killed, the kernel kills everything it started; --mount-proc gives the root a
    # /proc of that namespace. The mounts are private to the namespace and vanish with it.
    outer = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
             f"--mount-proc={root / 'proc'}", "sh", "-c", command]
    return subprocess.run(outer, timeout=timeout, **kwargs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["ensure"])
    parser.add_argument("suite", choices=sorted(PACKAGES))
    args = parser.parse_args()
    try:
        ensure(args.suite)
    except RootUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as error:
        print(f"error: making the Debian {args.suite} system failed ({error}); run the same command again",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
