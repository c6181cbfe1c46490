"""A full output disk: one clear line, exit 1, no partial frame in --out, and a rerun resumes.

The disk is a real, tiny tmpfs; mounting needs root (CAP_SYS_ADMIN), so without it the test skips.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import farm, make_scene, max_difference, render_whole


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` to the last page, then free ``leave`` bytes (tmpfs counts whole pages)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    os.truncate(filler, filler.stat().st_size - leave)
    return filler


def test_full_output_disk_is_one_line_and_leaves_no_partial_frame(tmp_path, state, small_disk):
    blend = make_scene(tmp_path / "scene.blend", size=[96, 64], samples=16, frames=[1, 2])
    out = small_disk / "frames"
    filler = fill(small_disk, leave=4096)
    args = ["render", blend, "--tile", "32", "--out", out]

    full = farm(*args, state=state)

    assert full.returncode == 1, full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith("farm:")]
    assert errors == [f"farm: failed: disk full while writing frames to {out}; free some space and run "
                      "the same command again to resume"], full.stderr
    assert "Traceback" not in full.stderr
    merged = sorted((state / "repos" / "merger").glob("*/*.png"))
    assert len(merged) == 2 and all(frame.stat().st_size > 4096 for frame in merged), "frames must not fit"
    assert not out.exists() or list(out.iterdir()) == [], "nothing, not even a temp file, is left in --out"

    filler.unlink()
    again = farm(*args, state=state)

    assert again.returncode == 0, again.stderr
    assert "datum(s) to process" not in again.stderr, "the rerun only copies the finished frames"
    reference = render_whole(blend, tmp_path / "whole", [1, 2])
    for frame, whole in reference.items():
        assert max_difference(out / f"{frame:06d}.png", whole) <= 1


def test_full_disk_while_preparing_is_named(tmp_path, small_disk):
    """The farm's state on a full disk: the job's copy of the scene cannot be saved, and the line says so."""
    blend = make_scene(tmp_path / "scene.blend", size=[32, 18], frames=[1, 1])
    state = small_disk / "state"
    fill(small_disk, leave=16384)  # room for the state's first small files, not for the scene's copy

    full = farm("render", blend, "--tile", "16", "--out", tmp_path / "frames", state=state)

    assert full.returncode == 1, full.stderr
    assert "Traceback" not in full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"farm: failed: {blend}: preparing the scene failed (disk full "
                                                   f"while saving the job's copy of the scene in {state}/"), lines
    assert lines[0].endswith("; free some space and run again)"), lines
    assert not (tmp_path / "frames").exists()
