"""Everything a scene needs travels with its job (BAT): real scenes, their files made by Blender.

Each scene is rendered at home, then its job folder is prepared as ``farm render`` prepares
it, moved away, and the scene's own files are deleted. The farm renders the moved folder
(the CLI, on the local farm) and every frame must match the home render; frames differ
from each other, so a frame that used another frame's image or cache would fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from blender_asset_tracer import blendfile, trace
from conftest import ROOT, SHARED_SCENES, farm, max_difference, render_whole
from test_shared_scenes import small_copy

from farm_pipelines import job_folder
from farm_pipelines.dependencies import carry
from farm_pipelines.errors import BadInput
from farm_pipelines.file_store import FileStore
from farm_pipelines.host import Host
from farm_pipelines.job import Job, JobSettings, job_name_for
from farm_pipelines.preparation import prepare_job

FRAMES = [1, 2, 3]


def build(kind: str, home: Path) -> Path:
    subprocess.run([sys.executable, str(ROOT / "tests" / "dependency_scenes.py"), kind, str(home)], check=True,
                   capture_output=True)
    return home / "scene.blend"


def prepare(blend: Path, state: Path, settings: JobSettings | None = None) -> tuple[Path, dict]:
    job = Job(job_name_for(blend.stem, str(blend)), blend.stem, settings or JobSettings())
    _, folder, facts = prepare_job(blend, job, state / "prepared", Host(), workers=2)
    return folder, facts


def moved_job(blend: Path, tmp_path: Path) -> Path:
    """The job folder of ``blend``, prepared, then moved to a place of its own: ``<tmp>/moved/scene/scene.blend``."""
    folder, facts = prepare(blend, tmp_path / "prepare-state")
    assert not facts["carried"].missing, facts["carried"].missing
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    return job_folder.scene_blend(moved)


def outside(blend: Path) -> list[str]:
    """Every file ``blend`` (and any library it links) refers to outside its own folder, as BAT traces them."""
    root = blend.parent.resolve()
    try:
        return sorted({str(usage.abspath) for usage in trace.deps(blend)
                       if not Path(os.path.normpath(usage.abspath)).is_relative_to(root)})
    finally:
        blendfile.close_all_cached()


def render_on_farm(blend: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    done = farm("render", blend, "--tile", "16x24", "--out", tmp_path / "farm", *args, state=tmp_path / "state")
    assert done.returncode == 0, done.stderr
    return done


def assert_same_frames(tmp_path: Path, home: dict[int, Path]) -> None:
    for frame, path in home.items():
        assert max_difference(tmp_path / "farm" / f"{frame:06d}.png", path) <= 1, f"frame {frame}"
    assert min(max_difference(home[a], home[b]) for a, b in [(1, 2), (2, 3), (1, 3)]) > 100


@pytest.mark.parametrize("kind, carried, faithful", [
    ("textures", 6, False),  # 3 sequence images, a movie, 2 UDIM tiles
    ("caches", 8, False),  # a .vdb, an .abc, and a bake of 3 frames (meta + blob each)
    ("particles", 4, False),  # a disk point cache: frames 0-3
    # By a Pachyderm worker's rules: every file of the lazy blends input a named pipe, the blend and
    # its files fetched into the worker's cache (blend_cache), relative paths resolved there.
    ("textures", 6, True),
])
def test_built_scene_renders_from_its_moved_job_folder_as_at_home(tmp_path, monkeypatch, kind, carried, faithful):
    if faithful:
        monkeypatch.setenv("FARM_FAITHFUL", "1")
        monkeypatch.setenv("FARM_BLEND_CACHE", str(tmp_path / "worker-cache"))
    blend = build(kind, tmp_path / "home")
    home = render_whole(blend, tmp_path / "whole", FRAMES)
    job = moved_job(blend, tmp_path)
    shutil.rmtree(tmp_path / "home")
    assert outside(job) == []

    done = render_on_farm(job, tmp_path)

    assert f"the job carries {carried} file(s)" in done.stderr
    assert "missing" not in done.stderr
    assert_same_frames(tmp_path, home)
    folders = list((tmp_path / "state" / "repos" / "blends").iterdir())  # the job's, or each of its parts'
    for folder in folders:
        published = [p for p in job_folder.carried_files(folder).rglob("*") if p.is_file()]
        assert len(published) == carried
        # One inode: the store, the job folder, and each folder of the job in the blends repo.
        assert all(p.stat().st_nlink == 2 + len(folders) for p in published)
    if faithful:  # the renderers read the pipes into their cache, beside the cached blend
        assert len([p for p in (tmp_path / "worker-cache" / "files").rglob("*") if p.is_file()]) == carried


def test_suzanne_with_its_linked_library_and_hdr_renders_from_its_moved_job_folder(tmp_path):
    blend = small_copy(SHARED_SCENES / "gltf" / "02_suzanne.blend", tmp_path / "home" / "suzanne.blend")
    home = render_whole(blend, tmp_path / "whole", [1])
    job = moved_job(blend, tmp_path)
    carried = sorted(p.name for p in (job.parent / "files").rglob("*") if p.is_file())
    assert {"glTF2.blend", "field.hdr"} <= set(carried) and len(carried) >= 5, carried
    assert outside(job) == []  # the library's own paths were rewritten too

    render_on_farm(job, tmp_path)

    assert max_difference(tmp_path / "farm" / "000001.png", home[1]) <= 1


def test_missing_file_is_named_with_its_data_block_and_strict_refuses(tmp_path):
    blend = build("textures", tmp_path / "home")
    (tmp_path / "home" / "movie" / "colours.mkv").unlink()

    _, facts = prepare(blend, tmp_path / "state")
    [missing] = facts["carried"].missing
    assert missing.endswith('colours.mkv (image "Colours" of material "Screen")'), missing
    assert len(facts["carried"].files) == 5

    strict = farm("render", blend, "--whole-frame", "--strict", "--out", tmp_path / "out", state=tmp_path / "state")
    assert strict.returncode == 2, strict.stderr
    assert 'colours.mkv (image "Colours" of material "Screen")' in strict.stderr
    assert "Traceback" not in strict.stderr and not (tmp_path / "out").exists()


def test_foreign_paths_relative_and_absolute_ones_travel_drive_letters_are_named(tmp_path):
    blend = build("foreign_paths", tmp_path / "home")

    folder, facts = prepare(blend, tmp_path / "state")

    carried = facts["carried"]
    # //tex\wood.png and /.../absolute/brick.png are found here, and travel
    assert sorted(Path(f.path).name for f in carried.files) == ["brick.png", "wood.png"]
    [missing] = carried.missing  # Blender's save spells C:\Users\friend\far.png with forward slashes
    assert missing == 'C:/Users/friend/far.png (a Windows path) (image "Far" of material "Chair")', missing
    strict = farm("render", blend, "--whole-frame", "--strict", "--out", tmp_path / "out", state=tmp_path / "state")
    assert strict.returncode == 2 and "C:/Users/friend/far.png (a Windows path)" in strict.stderr


def test_each_content_is_stored_once_and_the_fingerprint_follows_every_file(tmp_path):
    blend = build("textures", tmp_path / "home")
    state = tmp_path / "state"
    first, facts = prepare(blend, state)
    fingerprint = json.loads((first / "job.json").read_text())["source_fingerprint"]
    assert all(f.new for f in facts["carried"].files)

    again, facts = prepare(blend, state)  # nothing changed: the same folder, nothing new
    assert json.loads((again / "job.json").read_text())["source_fingerprint"] == fingerprint
    assert not any(f.new for f in facts["carried"].files)

    other = shutil.copy(blend, tmp_path / "home" / "other.blend")  # another job with the same files
    other_folder, facts = prepare(Path(other), state)
    assert not any(f.new for f in facts["carried"].files)
    for file in facts["carried"].files:
        assert os.path.samefile(job_folder.scene_folder(first) / file.path,
                                job_folder.scene_folder(other_folder) / file.path)  # one inode for both jobs

    frame = tmp_path / "home" / "sequence" / "flip_0002.png"
    cv2.imwrite(str(frame), np.full((4, 4, 3), 255, np.uint8))  # a changed image, same name
    changed, facts = prepare(blend, state)
    assert json.loads((changed / "job.json").read_text())["source_fingerprint"] != fingerprint
    assert [f.path.rsplit("/", 1)[1] for f in facts["carried"].files if f.new] == ["flip_0002.png"]


def test_a_zstd_compressed_blend_is_traced_and_rewritten(tmp_path):
    """Blender 5 compresses with Zstandard; BAT reads and rewrites such files (a linked library may be one)."""
    blend = build("textures", tmp_path / "home")
    compressed = tmp_path / "home" / "compressed.blend"
    save = "import bpy, sys\nbpy.ops.wm.open_mainfile(filepath=sys.argv[-2])\n" \
           "bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1], compress=True, copy=True)\n"
    subprocess.run([sys.executable, "-c", save, str(blend), str(compressed)], check=True, capture_output=True)
    assert compressed.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # a Zstandard frame

    carried = carry(compressed, tmp_path / "job" / "scene.blend", FileStore(tmp_path / "store"), {})

    assert len(carried.files) == 6 and not carried.missing
    assert outside(tmp_path / "job" / "scene.blend") == []


def test_a_missing_library_is_named_and_the_library_beside_it_travels_with_its_texture(tmp_path):
    blend = build("libraries", tmp_path / "home")
    (tmp_path / "home" / "libs" / "lib_b.blend").unlink()
    home = render_whole(blend, tmp_path / "whole", [1])  # plain Blender, also without lib_b
    pixels = cv2.imread(str(home[1])).astype(int)  # BGR
    assert ((pixels[..., 2] > 180) & (pixels[..., 1] < 80)).any(), "lib_a's red texture is not in the home render"

    folder, facts = prepare(blend, tmp_path / "prepare-state")
    [missing] = facts["carried"].missing
    assert 'lib_b.blend (library "lib_b.blend"' in missing, missing
    assert sorted(Path(f.path).name for f in facts["carried"].files) == ["lib_a.blend", "lib_a.png"]
    shutil.move(folder, tmp_path / "moved")
    shutil.rmtree(tmp_path / "home")

    done = render_on_farm(job_folder.scene_blend(tmp_path / "moved"), tmp_path)

    assert "missing file:" in done.stderr and "lib_b.blend" in done.stderr
    assert max_difference(tmp_path / "farm" / "000001.png", home[1]) <= 1


def test_what_cannot_travel_is_named_missing_with_its_reason_and_never_read(tmp_path):
    """A folder, a device and a pipe as images; bakes at /, home and the scene's folder; a truncated library
    and a library's own bake: each named, none read (a pipe or /dev/zero would never end). A library
    without the .blend suffix travels with its texture; a ``####`` path is not a file and is named."""
    blend = build("hazards", tmp_path / "home")
    os.mkfifo(tmp_path / "home" / "pipe.png")
    broken = tmp_path / "home" / "libs" / "broken.blend"
    broken.write_bytes(broken.read_bytes()[:4096])

    folder, facts = prepare(blend, tmp_path / "state")

    carried = facts["carried"]
    assert sorted(Path(f.path).name for f in carried.files) == [
        "baked.blend", "baked.png", "far.png", "lib_c.library", "lib_c.png"]
    try:  # the job's renderers never open the pipe or the device: the job's blend names no such file
        named = {usage.block_name: usage.abspath for usage in trace.deps(job_folder.scene_blend(folder))}
    finally:
        blendfile.close_all_cached()
    for block, name in [(b"IMPipe", "pipe.png"), (b"IMZero", "zero"), (b"IMFolder", "folder_image")]:
        assert named[block] == job_folder.scene_folder(folder) / "files" / "not-carried" / name, named
        assert not named[block].exists()
    missing = "\n".join(carried.missing)
    for line in [f"{tmp_path}/home/folder_image (not a regular file) (image \"Folder\")",
                 "/dev/zero (not a regular file) (image \"Zero\")",
                 f"{tmp_path}/home/pipe.png (not a regular file) (image \"Pipe\")",
                 f"{tmp_path}/home/seq/flip_####.png (image \"Hashes\")",
                 "/ (the root or home folder; give the bake a folder of its own) "
                 "(bake 0 of modifier \"Nodes\" of object \"Root\")",
                 f"{Path.home()} (the root or home folder;",
                 "(it holds the scene's own folder; give the bake a folder of its own) "
                 "(bake 0 of modifier \"Nodes\" of object \"Beside\")",
                 f"{broken} (cannot be read: No DNA1 block in file, not a valid .blend file) (library \"broken.blend\"",
                 "lib_bake (no room to rewrite its path in baked.blend; bake it in the main scene)"]:
        assert line in missing, missing
    assert len(carried.missing) == 9, missing

    direct = carry(blend, tmp_path / "job" / "scene.blend", FileStore(tmp_path / "store"), {},
                   source_folder=blend.parent)
    assert direct.summary().endswith(", 1 from outside the scene's folder")  # far.png
    assert f"{tmp_path}/home (it holds the scene's own folder;" in "\n".join(direct.missing)

    library = tmp_path / "home" / "libs" / "lib_c.library"
    library.unlink()
    os.mkfifo(library)  # Blender would wait on it for ever while opening the scene
    with pytest.raises(BadInput, match=f"its library {library} is not a regular file"):
        prepare(blend, tmp_path / "state")


def test_two_bakes_of_one_modifier_travel_and_what_was_never_baked_is_not_missing(tmp_path):
    """The second bake has a folder of its own; a node bake and a particle disk cache were never baked."""
    blend = build("bakes", tmp_path / "home")

    folder, facts = prepare(blend, tmp_path / "state")

    assert facts["carried"].missing == []
    bakes = {Path(f.path).parts[2] for f in facts["carried"].files}
    assert bakes == {"modifier_bake", "custom_bake"}, bakes
    try:
        traced = [usage.abspath for usage in trace.deps(job_folder.scene_blend(folder))]
    finally:
        blendfile.close_all_cached()
    assert sorted(p.name for p in traced if p.exists()) == ["custom_bake", "modifier_bake"], traced
    assert outside(job_folder.scene_blend(folder)) == [str(tmp_path / "home" / "never_baked")]  # nothing to carry


def test_the_store_refuses_a_file_that_changed_after_the_job_hashed_it(tmp_path):
    texture = tmp_path / "wood.png"
    texture.write_bytes(b"the texture the job's blend was keyed with")
    store = FileStore(tmp_path / "store")
    hashed = store.sha256(texture)
    texture.write_bytes(b"painted over while the job was prepared")

    with pytest.raises(BadInput, match=rf"^{texture} changed while the job was prepared; submit again$"):
        store.put(texture, hashed)

    assert list(store.root.iterdir()) == []  # neither stored under the old hash nor left half-written
    sha256, new = store.put(texture)
    assert new and (store.root / sha256).read_bytes() == texture.read_bytes()
