"""A job cut into parts of frames for backends that deliver frames per commit (plain Python)."""

from __future__ import annotations

import pytest

from farm_pipelines.errors import BadInput
from farm_pipelines.job import FrameRange, Job, JobSettings
from farm_pipelines.job_parts import MAX_PART_FRAMES, job_of, min_tiles, part_sizes, split
from farm_pipelines.pipelines import load_spec

JOB = Job("shot-0a1b2c3d", "shot", JobSettings())


def test_parts_double_from_one_frame_up_to_the_cap_and_cover_every_frame_once():
    assert part_sizes(250) == [1, 2, 4, 8, 16, 32, 32, 32, 32, 32, 32, 27]
    assert part_sizes(1) == [1] and part_sizes(3) == [1, 2]
    assert part_sizes(10, least=3) == [3, 6, 1]
    assert part_sizes(200, least=40) == [40] * 5  # above the cap, to hold enough tiles, and no more
    for count in range(1, 300):
        assert sum(part_sizes(count)) == count and max(part_sizes(count)) <= MAX_PART_FRAMES


def test_each_part_is_a_job_of_its_own_frames_with_the_scenes_step():
    frames = list(range(1, 20, 3))  # 1, 4, 7, ..., 19: seven frames at step 3
    parts = split(JOB, frames)
    assert [p.name for p in parts] == ["shot-0a1b2c3d.part1", "shot-0a1b2c3d.part2", "shot-0a1b2c3d.part3"]
    assert [p.settings.frames for p in parts] == [FrameRange(1, 1, 3), FrameRange(4, 7, 3), FrameRange(10, 19, 3)]
    assert [f for p in parts for f in p.settings.frames.frames(0, 0)] == frames
    assert all(p.display_name == "shot" and p.settings.tile == JOB.settings.tile for p in parts)
    assert {job_of(p.name) for p in parts} == {JOB.name} and job_of(JOB.name) == JOB.name


def test_a_job_that_fits_one_part_keeps_its_name_and_parts_hold_enough_tiles_for_two_per_set():
    renderer = load_spec("renderer")  # 4 pods, datum_set_spec per_worker 4
    assert min_tiles(renderer, 4) == 32
    assert min_tiles({**renderer, "datum_set_spec": {"number": 5}}, 4) == 1
    assert min_tiles({"pipeline": {"name": "r"}}, 2) == 16  # pachd's default of 4 sets per worker
    assert split(JOB, [7]) == [JOB]
    assert split(JOB, [1, 2, 3], tiles_per_frame=12, least_tiles=32) == [JOB]  # 36 tiles: one part
    assert [len(p.settings.frames.frames(0, 0)) for p in split(JOB, list(range(1, 9)), 12, 32)] == [3, 5]


def test_a_part_name_is_still_a_safe_job_name():
    with pytest.raises(BadInput):
        split(Job("x" * 76, "x", JobSettings()), [1, 2])
