"""Finished tiles are reused across changes that do not change them, as a user meets it.

Other frames, the full range again, another output format: ``job.json`` changes, the
renderer's input (the job's ``scene/`` folder) does not, so not one tile renders again.
A scene saved again by another Blender session (the add-on saves a copy from the running
session) fingerprints by what renders, not by its bytes; and a frame the farm delivered,
shown in Blender as an image, never travels with the next job.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from blender_asset_tracer import blendfile
from conftest import farm, make_scene, max_difference, read_image, render_whole

from farm_pipelines import job_folder
from farm_pipelines.blend_cache import file_sha256
from farm_pipelines.blend_fingerprint import fingerprint
from farm_pipelines.datums import Datum, datum_id, enumerate_datums
from farm_pipelines.host import Host
from farm_pipelines.job import Job, JobSettings, job_name_for
from farm_pipelines.local.pachd_rules import hash_datum
from farm_pipelines.pipelines import load_spec
from farm_pipelines.preparation import prepare_job

#: A Blender session of the artist: opens the scene with its UI, does ``mode``, saves a copy as the add-on does.
SESSION = """
import bpy, sys
source, copy, mode, frame = sys.argv[-4:]
bpy.ops.wm.open_mainfile(filepath=source, load_ui=True, use_scripts=False)
if mode in ("ui", "frame"):  # another zoom and tab, previews drawn, a render looked at: nothing that renders
    for screen in bpy.data.screens:
        for area in screen.areas:
            space = area.spaces.active
            if area.type == "VIEW_3D":
                space.region_3d.view_distance *= 2.5
            elif area.type == "PROPERTIES":
                space.context = "MATERIAL"
    for material in bpy.data.materials:
        material.preview_ensure()
    bpy.ops.render.render()  # F12: the session now has a Render Result image
    assert "Render Result" in bpy.data.images
if mode == "frame":  # the add-on loads a finished frame and shows it in the Image Editors
    image = bpy.data.images.load(frame, check_existing=True)
    for screen in bpy.data.screens:
        for area in screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = image
if mode == "colour":
    bpy.data.materials["Tint"].node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0, 0, 1, 1)
if mode == "moved":
    bpy.data.objects["Sphere"].location.z += 0.5
bpy.ops.wm.save_as_mainfile(filepath=copy, copy=True, relative_remap=True, compress=False)
"""

PLAIN_EXR = """
import bpy, sys
bpy.ops.wm.open_mainfile(filepath=sys.argv[-3], load_ui=False, use_scripts=False)
scene = bpy.context.scene
settings = scene.render.image_settings
if hasattr(settings, "media_type"):
    settings.media_type = "IMAGE"
settings.file_format = "OPEN_EXR"
for frame in [int(f) for f in sys.argv[-1].split(",")]:
    scene.frame_set(frame)
    scene.render.filepath = f"{sys.argv[-2]}/{frame:06d}"
    bpy.ops.render.render(write_still=True)
"""


def session(source: Path, copy: Path, mode: str, frame: Path | None = None) -> Path:
    subprocess.run([sys.executable, "-c", SESSION, str(source), str(copy), mode, str(frame or "")], check=True,
                   capture_output=True)
    return copy


def rendered_tiles(done: subprocess.CompletedProcess) -> int:
    """Tiles the run rendered, from the farm's own line (none when every tile was there already)."""
    assert done.returncode == 0, done.stderr
    counts = re.findall(r"^renderer: (\d+) of \d+ datum\(s\) to process", done.stderr, re.MULTILINE)
    return sum(int(count) for count in counts)


def test_other_frames_the_full_range_again_and_exr_render_no_tile_again(tmp_path, state):
    blend = make_scene(tmp_path / "shot.blend", size=[32, 24], frames=[1, 4])
    plain = render_whole(blend, tmp_path / "plain", [1, 2, 3, 4])
    render = ["render", blend, "--tile", "16", "--workers", "1"]
    tiles = state / "repos" / "splitter" / job_name_for(blend.stem, str(blend)) / "tiles"

    assert rendered_tiles(farm(*render, "--out", tmp_path / "all", state=state)) == 16
    cut = {path.name: path.read_bytes() for path in tiles.iterdir()}
    assert rendered_tiles(farm(*render, "--frames", "2-3", "--out", tmp_path / "middle", state=state)) == 0
    assert {path.name: path.read_bytes() for path in tiles.iterdir()} == {
        name: data for name, data in cut.items() if name.startswith(("000002_", "000003_"))}
    assert rendered_tiles(farm(*render, "--out", tmp_path / "again", state=state)) == 0
    assert rendered_tiles(farm(*render, "--format", "exr", "--out", tmp_path / "exr", state=state)) == 0

    for frame in (1, 2, 3, 4):
        for out in ("all", "again") + (("middle",) if frame in (2, 3) else ()):
            assert max_difference(tmp_path / out / f"{frame:06d}.png", plain[frame]) == 0, (out, frame)
    subprocess.run([sys.executable, "-c", PLAIN_EXR, str(blend), str(tmp_path / "plain-exr"), "1,2,3,4"],
                   check=True, capture_output=True)
    for frame in (1, 2, 3, 4):
        ours, theirs = read_image(tmp_path / "exr" / f"{frame:06d}.exr"), read_image(
            tmp_path / "plain-exr" / f"{frame:06d}.exr")
        assert ours.shape == theirs.shape and (ours == theirs).all(), frame


def test_a_sessions_save_fingerprints_by_what_renders_and_a_real_edit_changes_it(tmp_path):
    artist = make_scene(tmp_path / "artist.blend", size=[32, 24])
    first = session(artist, tmp_path / "first.blend", "none")
    second = session(artist, tmp_path / "second.blend", "ui")
    assert first.read_bytes() != second.read_bytes()  # what the job was fingerprinted by before

    assert fingerprint(first) == fingerprint(second)
    edits = [fingerprint(session(artist, tmp_path / f"{mode}.blend", mode)) for mode in ("colour", "moved")]
    assert len({fingerprint(first), *edits}) == 3


def test_a_restarted_sessions_copy_renders_no_tile_and_a_shown_frame_never_travels(tmp_path, state):
    """The add-on saves each session's copy at one path; the second session's copy reuses every tile,
    though it shows a frame the farm delivered: that frame is pointed away from (``files/not-carried``),
    neither carried nor missing."""
    artist = make_scene(tmp_path / "artist.blend", size=[32, 24], frames=[1, 2])
    copy = tmp_path / "addon-copy" / "artist.blend"
    copy.parent.mkdir()
    render = ["render", copy, "--tile", "16", "--workers", "1", "--out", tmp_path / "out"]
    session(artist, copy, "none")
    assert rendered_tiles(farm(*render, state=state)) == 8
    shown = tmp_path / "out" / "000001.png"
    session(artist, copy, "frame", shown)  # Blender restarted: its own UI and previews, and the frame shown
    done = farm(*render, state=state)
    assert rendered_tiles(done) == 0 and "missing" not in done.stderr

    job = Job(job_name_for(copy.stem, str(copy)), copy.stem, JobSettings())
    before = Job.load(job_folder.job_json(state / "prepared" / job.name)).source_fingerprint
    again, folder, facts = prepare_job(copy, job, tmp_path / "prepared", Host(), 2, out_dir=tmp_path / "out")
    assert facts["carried"].files == [] and facts["carried"].missing == []
    assert again.source_fingerprint == before  # the same scene: its tiles are reused
    assert b"//files/not-carried/000001.png" in job_folder.scene_blend(folder).read_bytes()
    _, _, facts = prepare_job(copy, job, tmp_path / "unguarded", Host(), 2)
    assert [Path(f.path).name for f in facts["carried"].files] == ["000001.png"]  # what out_dir prevents

    blend = job_folder.scene_blend(folder)  # a few bytes of the kept blend flipped on disk: made again
    kept = fingerprint(blend, job_folder.not_carried)
    with blendfile.BlendFile(blend) as bfile:
        [tint] = [b for b in bfile.find_blocks_from_code(b"MA") if b.id_name == b"MATint"]
        offset = tint.file_offset + tint.size - 64
    with blend.open("r+b") as handle:
        handle.seek(offset)
        handle.write(b"\xff" * 8)
    assert fingerprint(blend, job_folder.not_carried) != kept
    prepare_job(copy, job, tmp_path / "prepared", Host(), 2, out_dir=tmp_path / "out")
    assert fingerprint(job_folder.scene_blend(folder), job_folder.not_carried) == kept


def test_the_renderers_datums_cover_the_scene_folder_and_never_job_json(tmp_path):
    """On the local farm's datum ids and on pachd's skip hash (the faithful farm's): a tile's datum
    changes with the scene or its files, never with job.json."""
    repos = tmp_path / "repos"
    job = repos / "blends" / "shot"
    job_folder.scene_folder(job).mkdir(parents=True)
    job_folder.scene_blend(job).write_bytes(b"blend")
    texture = job_folder.carried_files(job) / "0123" / "wood.png"
    texture.parent.mkdir(parents=True)
    texture.write_bytes(b"wood")
    job_folder.job_json(job).write_text(json.dumps({"frames": [1, 4]}))
    for piece in ("000001_0000", "000001_0001"):
        (repos / "splitter" / "shot" / "tiles").mkdir(parents=True, exist_ok=True)
        (repos / "splitter" / "shot" / "tiles" / f"{piece}.json").write_text(piece)
    spec = load_spec("renderer")["input"]

    def ids() -> list[tuple[str, str]]:
        datums = enumerate_datums(spec, repos)
        assert [d.inputs[0].path for d in datums] == ["/shot/scene"] * 2
        content = lambda item: datum_id(Datum((item,)), repos, "", file_sha256)  # noqa: E731
        return [(datum_id(d, repos, "salt", file_sha256), hash_datum("salt", d, repos, content)) for d in datums]

    first = ids()
    job_folder.job_json(job).write_text(json.dumps({"frames": [2, 3], "file_format": "OPEN_EXR"}))
    assert ids() == first
    texture.write_bytes(b"painted")
    assert all(a != b for a, b in zip(ids(), first, strict=True))
