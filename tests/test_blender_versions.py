"""A scene saved by a newer Blender than the farm's workers is refused at submission, on Pachyderm too.

The cluster's workers run the Blender of their image: ``farm deploy`` writes it into every
pipeline's environment, the submitting client reads it back from the renderer pipeline
(here from the contract test's in-process pachd) and compares it with the job's copy,
and a renderer whose own Blender is not the deployed one fails its tiles saying so.
The local farm's side (its workers are the submitting Blender) is in tests/test_blender_45.py.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import ROOT, make_scene
from test_pachyderm_contract import JOB, TOKEN, backend, pachd  # noqa: F401 (pachd is a fixture)

from farm_pipelines import cli
from farm_pipelines.blender_versions import WORKER_VERSION_ENV, header_version
from farm_pipelines.cluster_specs import deploy_specs
from farm_pipelines.errors import FarmFailure
from farm_pipelines.pachyderm import pipeline_request
from farm_pipelines.pipelines import PIPELINES, load_spec

BPY = importlib.metadata.version("bpy")


def test_deploy_writes_the_image_blender_into_every_pipeline(pachd):  # noqa: F811
    backend(pachd).deploy(deploy_specs("farm-worker:1", blender_version="4.5.15"))
    assert {name: pachd.pipelines[name].transform.env[WORKER_VERSION_ENV] for name in PIPELINES} == \
        dict.fromkeys(PIPELINES, "4.5.15")
    default = deploy_specs("farm-worker:1")
    assert {spec["transform"]["env"][WORKER_VERSION_ENV] for spec in default} == {BPY}


def test_farm_render_refuses_a_scene_newer_than_the_cluster_workers(pachd, tmp_path, monkeypatch, capsys):  # noqa: F811
    backend(pachd).deploy(deploy_specs("farm-worker:1", blender_version="4.5.15"))
    blend = make_scene(tmp_path / "shot.blend", frames=[1, 1])  # saved by this suite's bpy 5.0
    monkeypatch.setenv("FARM_PACHD_TOKEN", TOKEN)
    monkeypatch.setenv("FARM_STATE_DIR", str(tmp_path / "state"))
    out = tmp_path / "out"

    code = cli.main(["render", str(blend), "--pachd", pachd.address, "--out", str(out)])

    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(r"shot: the job's copy is saved by this Blender 5\.0, newer than Blender 4\.5\.15 that the "
                     r"farm's workers run .*rebuild the worker image .* or submit from Blender 4\.5", err), err
    assert pachd.commits == [] and not pachd.files["blends"], "nothing may be uploaded"
    assert not out.exists()


def test_renderer_deployed_without_its_blender_version_is_one_clear_line(pachd, tmp_path):  # noqa: F811
    farm = backend(pachd)
    farm.deploy(deploy_specs("farm-worker:1"))
    for name in PIPELINES:  # as an older `farm deploy` left them
        pachd.pipelines[name] = pipeline_request(load_spec(name))
    job = tmp_path / "job"
    job.mkdir()
    (job / "scene.blend").write_bytes(b"BLENDER17-01v0500REND")
    (job / "job.json").write_text("{}")
    with pytest.raises(FarmFailure, match=r"does not say which Blender its image runs: run `farm deploy"):
        farm.run(JOB, job, lambda progress: None, threading.Event())
    assert pachd.commits == []


def test_job_copy_header_names_the_blender_that_wrote_it(tmp_path):
    """The job's copy is written uncompressed by the submitting Blender; its header says which."""
    copy = tmp_path / "copy.blend"
    subprocess.run([sys.executable, "-c", "import bpy, sys; bpy.ops.wm.save_as_mainfile(filepath=sys.argv[1], "
                    "copy=True, compress=False)", str(copy)], check=True, capture_output=True)
    assert header_version(copy) == tuple(int(part) for part in BPY.split(".")[:2])


def test_worker_whose_blender_is_not_the_deployed_one_says_so():
    script = "from farm_pipelines.blender.render_tile import check_version\ncheck_version(())\n"
    env = dict(os.environ, **{WORKER_VERSION_ENV: "4.5.15"})
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode != 0
    assert f"deployed for Blender 4.5.15, but this worker image runs Blender {BPY}" in done.stderr
    env[WORKER_VERSION_ENV] = BPY
    assert subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT).returncode == 0


def test_worker_image_label_is_the_pinned_blender():
    """The image installs requirements.txt; its label and version file must name that bpy."""
    dockerfile = (ROOT / "farm_pipelines" / "docker" / "Dockerfile").read_text()
    pinned = re.search(r"^bpy==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert re.search(r"^ARG BLENDER_VERSION=(\S+)$", dockerfile, re.M).group(1) == pinned
    assert "LABEL render-farm.blender-version=$BLENDER_VERSION" in dockerfile


def test_header_version_refuses_what_is_not_a_blend(tmp_path):
    text = Path(tmp_path / "notes.blend")
    text.write_text("just text")
    with pytest.raises(FarmFailure, match="not an uncompressed .blend file"):
        header_version(text)
