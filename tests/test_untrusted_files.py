"""Blend files come from other people: their Python must never run on the farm."""

from __future__ import annotations

import subprocess
import sys

from conftest import farm, make_scene

TRUSTING_OPEN = (
    "import bpy, sys\n"
    "bpy.context.preferences.filepaths.use_scripts_auto_execute = True\n"
    "bpy.ops.wm.open_mainfile(filepath=sys.argv[-1], use_scripts=True)\n"
)


def test_registered_text_block_does_not_run(tmp_path, state):
    marker = tmp_path / "pwned.txt"
    blend = make_scene(tmp_path / "trojan.blend", frames=[1, 1], size=[32, 24], text_block_writes=str(marker))
    # Control: a Blender that trusts the file does run the payload.
    subprocess.run([sys.executable, "-c", TRUSTING_OPEN, str(blend)], check=True, capture_output=True)
    assert marker.read_text() == "ran"
    marker.unlink()

    done = farm("render", blend, "--tile", "16", "--out", tmp_path / "out", state=state)

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "000001.png").exists()
    assert not marker.exists()
