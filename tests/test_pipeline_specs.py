"""The pipeline specs as Pachyderm reads them: python-pachyderm's own parser, and the join pairing.

The join check evaluates each spec's glob patterns and ``join_on`` captures over a
two-job repo layout, the way pachd pairs files: each tile must meet only its own
job's blend, and the merger must see each job, whole, exactly once.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import python_pachyderm
from python_pachyderm.proto.v2.pps import pps_pb2

from farm_pipelines import cli
from farm_pipelines.cluster_specs import GPU_NODE_LABEL, SPEC_ANNOTATION, deploy_specs, parse_toleration, spec_digest
from farm_pipelines.errors import BadInput, FarmFailure
from farm_pipelines.pfs import THREADS_ENV, spec_threads, threads
from farm_pipelines.pipelines import PIPELINES, load_spec, spec_path

ROOT = Path(__file__).resolve().parents[1]

# Two jobs, laid out as the specs say each repo is.
REPOS = {
    "blends": ["/a/scene/scene.blend", "/a/job.json", "/b/scene/scene.blend", "/b/job.json"],
    "splitter": ["/a/tiles/000001_0000.json", "/a/tiles/000001_0001.json", "/a/tiles/000002_0000.json",
                 "/a/tiles/000002_0001.json", "/a/frames/000001/manifest.json", "/a/frames/000002/manifest.json",
                 "/b/tiles/000007_0000.json", "/b/frames/000007/manifest.json"],
    "renderer": ["/a/000001/0000.exr", "/a/000001/0001.exr", "/a/000002/0000.exr", "/a/000002/0001.exr",
                 "/b/000007/0000.exr"],
}


@pytest.mark.parametrize("name", PIPELINES)
def test_spec_parses_with_python_pachyderm(name):
    text = spec_path(name).read_text(encoding="utf-8")
    request = python_pachyderm.parse_json_pipeline_spec(text)
    assert isinstance(request, pps_pb2.CreatePipelineRequest)
    assert request == python_pachyderm.parse_dict_pipeline_spec(json.loads(text))
    assert request.pipeline.name == name
    assert request.datum_tries >= 2 and request.parallelism_spec.constant >= 1
    assert request.resource_requests.cpu > 0 and request.resource_requests.memory
    python, flag, module = request.transform.cmd
    assert (python, flag) == ("python3", "-m") and importlib.util.find_spec(module) is not None


def test_renderer_batches_datums():
    request = python_pachyderm.parse_dict_pipeline_spec(load_spec("renderer"))
    assert request.transform.datum_batching


@pytest.mark.parametrize("name", PIPELINES)
def test_deploy_specs_parse_and_carry_the_image(name):
    spec = next(s for s in deploy_specs("registry.local:5000/farm-worker:7", gpu=True,
                                        renderer_nodes={"render-farm/spot": "true"}) if s["pipeline"]["name"] == name)
    request = python_pachyderm.parse_dict_pipeline_spec(spec)
    assert request.transform.image == "registry.local:5000/farm-worker:7"
    selector = dict(request.scheduling_spec.node_selector)
    if name == "renderer":
        assert (request.resource_limits.gpu.type, request.resource_limits.gpu.number) == ("nvidia.com/gpu", 1)
        assert selector == {GPU_NODE_LABEL: "true", "render-farm/spot": "true"}
    else:  # only renderers go to GPU or preemptible nodes
        assert not request.resource_limits.HasField("gpu") and selector == {}


def test_spec_digest_follows_the_content():
    first, second, gpu = deploy_specs("w:1"), deploy_specs("w:2"), deploy_specs("w:1", gpu=True)
    digest = [[s["metadata"]["annotations"][SPEC_ANNOTATION] for s in specs] for specs in (first, second, gpu)]
    assert digest[0] == [s["metadata"]["annotations"][SPEC_ANNOTATION] for s in deploy_specs("w:1")]
    assert all(a != b for a, b in zip(digest[0], digest[1], strict=True))
    assert digest[2][0] == digest[0][0] and digest[2][1] != digest[0][1]
    unannotated = deploy_specs("w:1")[0]
    del unannotated["metadata"]
    assert spec_digest(unannotated) == digest[0][0]


def test_deploy_needs_an_image():
    with pytest.raises(BadInput, match="--image"):
        deploy_specs(" ")


def _glob_regex(glob: str) -> re.Pattern:
    """Pachyderm's glob: ``*`` stays within one path segment, ``(...)`` captures for ``join_on``."""
    out = ""
    for char in glob:
        out += {"*": "[^/]+", "?": "[^/]", "(": "(", ")": ")"}.get(char, re.escape(char))
    return re.compile(out)


def _matches(pfs: dict) -> dict[str, list[str]]:
    """join_on key -> the datum paths (files or directories) of one pfs input that carry it."""
    regex = _glob_regex(pfs["glob"])
    paths = set()
    for file in REPOS[pfs["repo"]]:
        parts = file.strip("/").split("/")
        paths.update("/" + "/".join(parts[:depth]) for depth in range(1, len(parts) + 1))
    keyed = defaultdict(list)
    for path in sorted(paths):
        match = regex.fullmatch(path)
        if match:
            keyed[match.expand(pfs["join_on"].replace("$", "\\"))].append(path)
    return keyed


def _join_datums(spec: dict) -> list[dict[str, str]]:
    """Pachyderm's inner join: the cross product of each input's matches, per shared key."""
    inputs = [item["pfs"] for item in spec["input"]["join"]]
    keyed = [_matches(pfs) for pfs in inputs]
    datums = []
    for key in sorted(set.intersection(*(set(k) for k in keyed))):
        combos = [{}]
        for pfs, matches in zip(inputs, keyed, strict=True):
            combos = [dict(c, **{pfs["name"]: path}) for c in combos for path in matches[key]]
        datums += combos
    return datums


def test_renderer_pairs_each_tile_with_its_own_jobs_blend_only():
    datums = _join_datums(load_spec("renderer"))
    tiles = [p for p in REPOS["splitter"] if "/tiles/" in p]
    assert sorted(d["splitter"] for d in datums) == sorted(tiles)  # every tile once, no manifests
    for datum in datums:
        assert datum["blends"] == "/" + datum["splitter"].split("/")[1] + "/scene"


def test_merger_has_one_datum_per_frame_with_its_own_jobs_blend_and_tiles():
    datums = _join_datums(load_spec("merger"))
    assert datums == [{"blends": "/a", "splitter": "/a/frames/000001", "renderer": "/a"},
                      {"blends": "/a", "splitter": "/a/frames/000002", "renderer": "/a"},
                      {"blends": "/b", "splitter": "/b/frames/000007", "renderer": "/b"}]
    lazy = {item["pfs"]["name"] for item in load_spec("merger")["input"]["join"] if item["pfs"].get("lazy")}
    assert lazy == {"renderer"}  # a frame's datum fetches only the tiles it opens


def test_splitter_sees_one_job_per_datum():
    regex = _glob_regex(load_spec("splitter")["input"]["pfs"]["glob"])
    assert [p for p in ("/a", "/b", "/a/scene.blend") if regex.fullmatch(p)] == ["/a", "/b"]


@pytest.mark.parametrize("name", PIPELINES)
def test_deploy_specs_give_each_worker_threads_from_its_cpu_request(name):
    """pachd tells user code nothing of its CPU request, so the spec's own env must (pfs.spec_threads)."""
    plain = {s["pipeline"]["name"]: s for s in deploy_specs("w:1")}[name]
    request = python_pachyderm.parse_dict_pipeline_spec(plain)
    cpu = load_spec(name)["resource_requests"]["cpu"]
    assert request.resource_requests.cpu == cpu
    assert request.transform.env[THREADS_ENV] == str(math.ceil(cpu))

    half = {s["pipeline"]["name"]: s for s in deploy_specs("w:1", renderer_cpu=2.5)}[name]
    request = python_pachyderm.parse_dict_pipeline_spec(half)
    if name == "renderer":  # --renderer-cpu changes the renderer's request, and its threads with it
        assert (request.resource_requests.cpu, request.transform.env[THREADS_ENV]) == (2.5, "3")
    else:
        assert request.transform.env[THREADS_ENV] == str(math.ceil(cpu))


@pytest.mark.parametrize(("requests", "limits", "expected"), [
    ({"cpu": 2}, {}, 2), ({"cpu": 0.25}, {}, 1), ({"cpu": 1.5}, {}, 2), ({"cpu": 4}, {"cpu": 2.5}, 2),
    ({"cpu": 0.5}, {"cpu": 0.5}, 1), ({"memory": "1Gi"}, {}, 0), ({}, {}, 0)])
def test_spec_threads_round_the_request_up_within_the_limit(requests, limits, expected):
    assert spec_threads({"resource_requests": requests, "resource_limits": limits}) == expected


@pytest.mark.parametrize("cpus", [0, -1, float("nan"), float("inf")])
def test_renderer_cpu_must_be_a_positive_number(cpus):
    with pytest.raises(BadInput, match="--renderer-cpu"):
        deploy_specs("w:1", renderer_cpu=cpus)


def test_workers_read_their_threads_and_refuse_a_bad_value(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert threads() == 0
    monkeypatch.setenv(THREADS_ENV, "3")
    assert threads() == 3
    monkeypatch.setenv(THREADS_ENV, "2.5")
    with pytest.raises(FarmFailure, match="FARM_THREADS='2.5' is not a whole number"):
        threads()


def test_deploy_command_takes_the_renderer_cpu(capsys):
    assert cli.main(["deploy", "--image", "w:1", "--renderer-cpu", "3"]) == 0
    specs = [json.loads(chunk) for chunk in re.split(r"(?m)^(?=\{)", capsys.readouterr().out) if chunk.strip()]
    renderer = python_pachyderm.parse_dict_pipeline_spec(next(s for s in specs if s["pipeline"]["name"] == "renderer"))
    assert (renderer.resource_requests.cpu, renderer.transform.env[THREADS_ENV]) == (3, "3")
    assert cli.main(["deploy", "--image", "w:1", "--renderer-cpu", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_renderer_sets_are_pachyderms_default_size_not_one_tile():
    """pachd starts the user code once per datum set (v2.7.0 transform/worker.go, handleDatumSetBatching);
    `number: 1` would start Blender per tile. registry.go, createSetSpec: number and size_bytes left 0
    means datums / (workers x per_worker); an all-zero spec would divide by zero."""
    request = python_pachyderm.parse_dict_pipeline_spec(load_spec("renderer"))
    spec = request.datum_set_spec
    assert (spec.number, spec.size_bytes, spec.per_worker) == (0, 0, 4)
    for name in PIPELINES:
        if "datum_set_spec" in load_spec(name):
            parsed = python_pachyderm.parse_dict_pipeline_spec(load_spec(name)).datum_set_spec
            assert parsed.number or parsed.size_bytes or parsed.per_worker, name


def test_renderer_reads_the_blend_lazily_and_the_tile_eagerly():
    """A lazy input is a named pipe fetched only if opened (pfssync/pipe_unix.go, makePipe), so a tile
    whose blend the worker has cached downloads nothing, and the meta commit does not store it again."""
    [blends, tiles] = python_pachyderm.parse_dict_pipeline_spec(load_spec("renderer")).input.join
    assert (blends.pfs.name, blends.pfs.lazy) == ("blends", True)
    assert (tiles.pfs.name, tiles.pfs.lazy) == ("splitter", False)


def test_renderer_recovers_a_failed_tile_with_a_command_that_exists():
    transform = python_pachyderm.parse_dict_pipeline_spec(load_spec("renderer")).transform
    python, flag, module = transform.err_cmd
    assert (python, flag) == ("python3", "-m") and importlib.util.find_spec(module) is not None
    for name in ("splitter", "merger"):  # a failed split or merge must fail the job, not vanish
        assert not python_pachyderm.parse_dict_pipeline_spec(load_spec(name)).transform.err_cmd


def test_err_cmd_logs_the_tile_with_its_datum_id_and_exits_0(tmp_path):
    """What pachd runs after a failed try (forEachDatum's WithRecoveryCallback ->
    driver.RunUserErrorHandlingCode, with the datum's environment): exit 0 marks the datum RECOVERED."""
    transform = load_spec("renderer")["transform"]
    datum_id = "ab" * 32
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "PACH_DATUM_ID": datum_id,
           "PACH_JOB_ID": "c" * 32, "splitter": "/pfs/splitter/shot_1-0a1b2c3d/tiles/000012_0003_01.json"}
    done = subprocess.run([sys.executable, *transform["err_cmd"][1:]], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    assert f"tile shot_1-0a1b2c3d/tiles/000012_0003_01.json (datum {datum_id})" in line
    assert "frame 12 tile 3 sample chunk 1" in line and "c" * 32 in line


def test_deployed_renderer_keeps_its_sets_lazy_blend_and_err_cmd():
    renderer = next(s for s in deploy_specs("w:1", gpu=True) if s["pipeline"]["name"] == "renderer")
    request = python_pachyderm.parse_dict_pipeline_spec(renderer)
    assert request.datum_set_spec.per_worker == 4 and request.input.join[0].pfs.lazy
    assert list(request.transform.err_cmd) == load_spec("renderer")["transform"]["err_cmd"]


def test_render_pods_take_a_priority_class_and_tolerate_spot_taints():
    tolerations = [parse_toleration("render-farm/spot=true:NoSchedule"), parse_toleration("gpu:NoExecute")]
    specs = {s["pipeline"]["name"]: s for s in deploy_specs("w:1", renderer_priority_class="farm-render-low",
                                                            renderer_tolerations=tolerations)}
    renderer = python_pachyderm.parse_dict_pipeline_spec(specs["renderer"])
    assert renderer.scheduling_spec.priority_class_name == "farm-render-low"
    assert [(t.key, t.operator, t.value, t.effect) for t in renderer.tolerations] == [
        ("render-farm/spot", pps_pb2.EQUAL, "true", pps_pb2.NO_SCHEDULE),
        ("gpu", pps_pb2.EXISTS, "", pps_pb2.NO_EXECUTE)]
    for name in ("splitter", "merger"):  # the job's critical path keeps the default priority and nodes
        other = python_pachyderm.parse_dict_pipeline_spec(specs[name])
        assert not other.scheduling_spec.priority_class_name and not other.tolerations


@pytest.mark.parametrize("text", ["render-farm/spot=true", "=x:NoSchedule", "spot=true:NO_SCHEDULE", ":NoExecute"])
def test_a_bad_toleration_is_one_line(text):
    with pytest.raises(BadInput, match="KEY=VALUE:EFFECT") as error:
        parse_toleration(text)
    assert "\n" not in str(error.value)
