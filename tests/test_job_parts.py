"""A job cut into parts of frames for backends that deliver frames per commit (plain Python)."""

from __future__ import annotations

import pytest

from farm_pipelines.errors import BadInput
from farm_pipelines.job import FrameRange, Job, JobSettings
from farm_pipelines.job_parts import MAX_PART_FRAMES, FramePlan, cell_of, cell_sizes, job_of, min_tiles, split
from farm_pipelines.pipelines import load_spec

JOB = Job("shot-0a1b2c3d", "shot", JobSettings())


def ranges(parts: list[Job]) -> list[tuple[str, int, int]]:
    return [(p.name.rsplit(".", 1)[1], p.settings.frames.start, p.settings.frames.end) for p in parts]


def test_the_grid_doubles_from_one_frame_to_the_cap_and_covers_every_frame_once():
    assert cell_sizes() == [1, 2, 4, 8] and cell_sizes(least=3) == [3, 3, 4, 8] and cell_sizes(40) == [40]
    assert [cell_of(i) for i in range(16)] == [0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 4]
    assert cell_of(15 + MAX_PART_FRAMES) == 5 and cell_of(-1) == -1 and cell_of(-MAX_PART_FRAMES - 1) == -2
    parts = split(JOB, FramePlan(list(range(1, 251)), 1))
    assert len(parts) == 19 and [f for p in parts for f in p.settings.frames.frames(0, 0)] == list(range(1, 251))
    assert ranges(parts)[:6] == [("p0", 1, 1), ("p1", 2, 3), ("p2", 4, 7), ("p3", 8, 15), ("p4", 16, 31),
                                 ("p5", 32, 47)]


def test_a_frame_is_in_the_same_part_whatever_range_is_asked():
    """pachd identifies a datum by its paths: a frame moved to another part would render again."""
    whole = {f: p.name for p in split(JOB, FramePlan(list(range(1, 41)), 1)) for f in p.settings.frames.frames(0, 0)}
    for asked in ([2, 3], list(range(5, 31)), [40], list(range(1, 41))):
        for part in split(JOB, FramePlan(asked, 1)):
            assert {whole[f] for f in part.settings.frames.frames(0, 0)} == {part.name}
    assert ranges(split(JOB, FramePlan([2, 3], 1))) == [("p1", 2, 3)]  # the same part, the same job.json


def test_parts_keep_the_scenes_step_and_frames_before_its_start():
    frames = list(range(-5, 20, 3))  # -5, -2, 1, ..., 19 at step 3, scene starting at 1
    parts = split(JOB, FramePlan(frames, 1))
    assert [p.settings.frames for p in parts] == [FrameRange(-5, -2, 3), FrameRange(1, 1, 3), FrameRange(4, 7, 3),
                                                  FrameRange(10, 19, 3)]
    assert [f for p in parts for f in p.settings.frames.frames(0, 0)] == frames
    assert all(p.display_name == "shot" and p.settings.tile == JOB.settings.tile for p in parts)
    assert {job_of(p.name) for p in parts} == {JOB.name} and job_of(JOB.name) == JOB.name
    assert job_of("shot.p-12345678") == "shot.p-12345678"  # a job whose display name ends in ".p"


def test_parts_hold_enough_tiles_for_two_per_datum_set():
    renderer = load_spec("renderer")  # 4 pods, datum_set_spec per_worker 4
    assert min_tiles(renderer, 4) == 32
    assert min_tiles({**renderer, "datum_set_spec": {"number": 5}}, 4) == 1
    assert min_tiles({"pipeline": {"name": "r"}}, 2) == 16  # pachd's default of 4 sets per worker
    assert split(JOB, None) == [JOB] and split(JOB, FramePlan([], 1)) == [JOB]
    # 12 tiles a frame, 32 at least: cells of 3, 3, 4, 8 frames, then 16
    assert ranges(split(JOB, FramePlan(list(range(1, 11)), 1, tiles_per_frame=12), 32)) == [
        ("p0", 1, 3), ("p1", 4, 6), ("p2", 7, 10)]


def test_a_part_name_is_still_a_safe_job_name():
    with pytest.raises(BadInput):
        split(Job("x" * 78, "x", JobSettings()), FramePlan([1, 2], 1))
