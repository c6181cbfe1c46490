"""GPU rendering, tested as far as a machine without a GPU can: these machines have none.

What runs for real here: Cycles' own device enumeration (which finds no GPU), the
backend choice, the CPU fallback and its warning, the local farm's worker layout and
its rule that a frame never mixes GPU and CPU tiles, and the specs ``farm deploy --gpu``
writes, run on the faithful farm. What no test here can show is a tile rendered on a
GPU: ``bench/gpu.py`` is that check, for a machine with a GPU and bpy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import pytest
from conftest import ROOT, farm, make_scene, max_difference, render_whole

from farm_pipelines import gpu
from farm_pipelines.cluster_specs import GPU_RENDERER, deploy_specs
from farm_pipelines.datums import Datum, DatumInput, glob_regex
from farm_pipelines.errors import BadInput
from farm_pipelines.job import JobSettings, TileSize
from farm_pipelines.local.farm import LocalFarm
from farm_pipelines.local.scheduler import Scheduler, Task
from farm_pipelines.pipeline_health import _what_to_do
from farm_pipelines.submission import render

#: These tests expect what a machine without a GPU shows; on one with a GPU, bench/gpu.py is the check.
NO_GPU = pytest.mark.skipif(gpu.may_have_gpu(), reason="this machine may have a GPU: run bench/gpu.py instead")

RTX = gpu.Device("OPTIX", "NVIDIA GeForce RTX 4070", "OPTIX_0000:01:00")
RTX_CUDA = gpu.Device("CUDA", "NVIDIA GeForce RTX 4070", "CUDA_0000:01:00")
RADEON = gpu.Device("HIP", "AMD Radeon RX 7800", "HIP_0000:03:00")


def test_auto_prefers_optix_then_cuda_and_a_named_backend_is_kept():
    found = {"CUDA": [RTX_CUDA], "OPTIX": [RTX], "HIP": [RADEON]}
    assert gpu.choose("auto", found).devices == (RTX,)
    assert gpu.choose("auto", {"CUDA": [RTX_CUDA], "HIP": [RADEON]}).devices == (RTX_CUDA,)
    assert gpu.choose("HIP", found).describe() == "HIP AMD Radeon RX 7800"
    assert gpu.choose("auto", found, pinned=RADEON.id).devices == (RADEON,)


def test_no_gpu_falls_back_to_the_cpu_with_the_reason():
    choice = gpu.choose("auto", {"CUDA": [], "OPTIX": []})
    assert choice.backend is None
    assert choice.reason == "Cycles found no OPTIX or CUDA or HIP or ONEAPI or METAL device here"
    assert "no CUDA device with id 'CUDA_x'" in gpu.choose("CUDA", {"CUDA": [RTX_CUDA]}, "CUDA_x").reason
    assert gpu.choose("CPU", {"OPTIX": [RTX]}).backend is None


def test_backend_setting_is_checked():
    assert gpu.parse_backend("optix") == "OPTIX" and gpu.parse_backend(None) == "auto"
    with pytest.raises(BadInput, match="not one of auto, OPTIX"):
        gpu.parse_backend("vulkan")


def test_worker_layout_one_worker_per_gpu_and_cpu_workers_on_the_rest():
    plans = gpu.plan_workers(list(range(8)), [RTX, RADEON])
    assert [(sorted(p.cpus), p.gpu) for p in plans[:2]] == [([0, 1], RTX), ([2, 3], RADEON)]
    assert [sorted(p.cpus) for p in plans[2:]] == [[4], [5], [6], [7]]
    assert [p.kind for p in gpu.plan_workers(list(range(8)), [RTX], workers=3)] == ["gpu", "cpu", "cpu"]
    two_cores = gpu.plan_workers([0, 1], [RTX])  # too few cores for two feeders: one each
    assert [(sorted(p.cpus), p.kind) for p in two_cores] == [([0], "gpu"), ([1], "cpu")]
    alone = gpu.plan_workers(list(range(8)), [RTX], workers=1)  # no CPU worker left: the GPU worker keeps them
    assert [(sorted(p.cpus), p.kind) for p in alone] == [(list(range(8)), "gpu")]
    no_gpu = gpu.plan_workers([0, 1, 2, 3], [], workers=2)
    assert [sorted(p.cpus) for p in no_gpu] == [[0, 1], [2, 3]] and {p.kind for p in no_gpu} == {"cpu"}


@NO_GPU
def test_cycles_enumeration_finds_no_gpu_on_this_machine(tmp_path):
    """Cycles' real ``available_devices`` in a Blender process: the backends this build has, and no device."""
    result = tmp_path / "devices.json"
    subprocess.run([sys.executable, "-m", "farm_pipelines.blender.devices", str(result)], check=True, cwd=ROOT,
                   capture_output=True)
    found = json.loads(result.read_text())
    assert {"CUDA", "OPTIX", "HIP"} <= set(found) <= set(gpu.BACKENDS)  # Linux builds: no Metal
    assert not gpu.may_have_gpu() and all(devices == [] for devices in found.values())
    farm_here = LocalFarm(tmp_path / "state", workers=2)
    assert farm_here.list_gpus() == []  # the local farm's own probe: the same answer
    assert [p.kind for p in farm_here.plans] == ["cpu", "cpu"]


def _task(frame: int, tile: int) -> Task:
    path = f"/job/tiles/{frame:06d}_{tile:04d}.json"
    return Task(Datum((DatumInput("splitter", "splitter", path, "job"),)), f"{frame}-{tile}")


def _scheduler(frames: tuple[int, ...], tiles: int) -> Scheduler:
    scheduler = Scheduler(3)
    scheduler.one_device_per_frame = True
    scheduler.join("gpu")
    scheduler.join("cpu")
    scheduler.feed([_task(f, t) for f in frames for t in range(tiles)])
    return scheduler


def _taken_within(scheduler: Scheduler, kind: str, seconds: float = 0.5) -> str | None:
    """The id of the task a worker of ``kind`` gets, or None if it is still waiting after ``seconds``."""
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(scheduler.take(kind).id), daemon=True)
    waiter.start()
    waiter.join(seconds)
    return got[0] if got else None


def test_a_frame_stays_on_the_kind_of_device_that_started_it():
    scheduler = _scheduler((1, 2, 3), tiles=2)
    first = scheduler.take("gpu")
    second = scheduler.take("cpu")
    assert (first.id, second.id) == ("1-0", "3-0")  # the GPU opens from the front, the CPU from the back
    assert [scheduler.take("gpu").id, scheduler.take("cpu").id] == ["1-1", "3-1"]
    assert _taken_within(scheduler, "cpu") is None  # frame 2 is the last unopened one: it waits for the GPU
    assert scheduler.take("gpu").id == "2-0"
    scheduler.finish(first, None)
    scheduler.leave("gpu")  # the GPU worker stopped for good: its frame's last tile goes to the CPU


def test_a_still_goes_to_the_gpu_whoever_asks_first():
    scheduler = _scheduler((1,), tiles=2)
    assert _taken_within(scheduler, "cpu") is None
    assert scheduler.take("gpu").id == "1-0"


def test_frames_of_a_gpu_worker_that_left_are_open_to_the_cpu():
    scheduler = _scheduler((1,), tiles=3)
    held = scheduler.take("gpu")
    assert _taken_within(scheduler, "cpu") is None  # frame 1 is the GPU's while a GPU worker lives
    scheduler.finish(held, "worker process died")  # back in the queue, then the worker leaves for good
    scheduler.leave("gpu")  # the CPU worker still waiting from above takes one tile, this one the other
    assert _taken_within(scheduler, "cpu") in {"1-1", "1-2"}


def test_without_the_rule_a_worker_takes_the_next_tile_whatever_its_frame():
    scheduler = Scheduler(3)
    scheduler.feed([_task(f, t) for f in (1, 2) for t in range(2)])
    assert [scheduler.take("gpu").id, scheduler.take("cpu").id] == ["1-0", "1-1"]


@NO_GPU
def test_a_gpu_scene_on_a_machine_without_gpus_renders_on_the_cpu_and_says_so(tmp_path, state):
    blend = make_scene(tmp_path / "gpu.blend", device="GPU", size=[48, 32], frames=[1, 1], dither=0.0)
    whole = render_whole(blend, tmp_path / "whole", [1])
    done = farm("render", blend, "--tile", "24x16", "--workers", "2", "--out", tmp_path / "out", state=state)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: worker")]
    assert warnings and all(line.endswith("the scene asks for GPU rendering, but Cycles found no OPTIX or CUDA "
                                          "or HIP or ONEAPI or METAL device here: rendering on the CPU")
                            for line in warnings), done.stderr
    assert max_difference(tmp_path / "out" / "000001.png", whole[1]) == 0


def test_a_cpu_scene_stays_on_the_cpu_without_a_warning(tmp_path, state):
    blend = make_scene(tmp_path / "cpu.blend", size=[32, 16], frames=[1, 1])
    done = farm("render", blend, "--whole-frame", "--workers", "1", "--out", tmp_path / "out", state=state)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr and "worker 0: renders on CPU (the scene renders on the CPU)" in done.stderr


def test_an_unknown_backend_is_bad_input(tmp_path, state):
    blend = make_scene(tmp_path / "cpu.blend", size=[32, 16], frames=[1, 1])
    env = dict(os.environ, FARM_STATE_DIR=str(state), FARM_GPU_BACKEND="vulkan")
    for flag, named in (([], "FARM_GPU_BACKEND"), (["--gpu-backend", "metal2"], "--gpu-backend")):
        done = subprocess.run([sys.executable, "-m", "farm_pipelines.cli", "render", str(blend), *flag, "--out",
                               str(tmp_path / "out")], capture_output=True, text=True, env=env, cwd=ROOT)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "is not one of auto, OPTIX, CUDA, HIP, ONEAPI, METAL or CPU" in done.stderr and named in done.stderr
    assert not (tmp_path / "out").exists()


def test_gpu_backend_cpu_renders_a_gpu_scene_on_the_cpu_without_a_warning(tmp_path, state):
    blend = make_scene(tmp_path / "gpu.blend", device="GPU", size=[32, 16], frames=[1, 1])
    done = farm("render", blend, "--whole-frame", "--workers", "1", "--gpu-backend", "cpu", "--out",
                tmp_path / "out", state=state)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr and "worker 0: renders on CPU (the GPU backend is set to CPU)" in done.stderr


def test_a_gpu_worker_keeps_its_frames_and_names_its_missing_gpu(tmp_path):
    """The layout with a GPU given to the farm: a device id Cycles does not know here (there is no GPU), so
    the GPU worker falls back with a warning naming it, and every frame's tiles come from one worker kind."""
    blend = make_scene(tmp_path / "gpu.blend", device="GPU", size=[48, 32], frames=[1, 4], dither=0.0)
    given = gpu.Device("CUDA", "NVIDIA GeForce RTX 4070", "CUDA_NVIDIA GeForce RTX 4070_0000:01:00")
    warnings: list[str] = []
    backend = LocalFarm(tmp_path / "state", workers=2, gpus=[given], warn=warnings.append)
    assert [p.kind for p in backend.plans] == ["gpu", "cpu"]
    frames = render(blend, JobSettings(tile=TileSize(16, 16)), tmp_path / "out", backend=backend,
                    cancel=threading.Event())
    assert len(frames) == 4
    assert warnings == ["worker 0: the scene asks for GPU rendering, but Cycles found no CUDA device with id "
                        f"'{given.id}' here: rendering on the CPU (given CUDA NVIDIA GeForce RTX 4070)"]
    kinds: dict[int, set[str]] = {}
    for log in (tmp_path / "state" / "logs" / "renderer").rglob("*.log"):
        kind = "gpu" if log.stem.endswith("-0") else "cpu"
        for frame in re.findall(r"renderer: \S+ frame (\d+) piece \S+ done", log.read_text()):
            kinds.setdefault(int(frame), set()).add(kind)
    assert sorted(kinds) == [1, 2, 3, 4] and all(len(k) == 1 for k in kinds.values()), kinds
    whole = render_whole(blend, tmp_path / "whole", [1, 2, 3, 4])
    assert all(max_difference(tmp_path / "out" / f"{f:06d}.png", whole[f]) == 0 for f in whole)


def test_deploy_gpu_renders_on_the_gpu_nodes():
    renderer = next(s for s in deploy_specs("w:1", gpu=True, gpu_backend="cuda", blender_version="5.0.1")
                    if s["pipeline"]["name"] == "renderer")
    assert renderer["resource_limits"]["gpu"] == {"type": "nvidia.com/gpu", "number": 1}
    assert renderer["scheduling_spec"]["node_selector"] == {"render-farm/gpu": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "EXISTS", "effect": "NO_SCHEDULE"} in renderer["tolerations"]
    assert renderer["transform"]["env"][gpu.BACKEND_ENV] == "CUDA"
    assert renderer["parallelism_spec"] == {"constant": 1}  # a pod per GPU: a house has one, unless told
    three = next(s for s in deploy_specs("w:1", gpu=True, gpu_workers=3, blender_version="5.0.1")
                 if s["pipeline"]["name"] == "renderer")
    assert three["parallelism_spec"] == {"constant": 3}
    for option in ({"gpu_share": 0.5}, {"gpu_backend": "cuda"}, {"gpu_workers": 2}):
        with pytest.raises(BadInput, match=f"--{next(iter(option)).replace('_', '-')} needs --gpu"):
            deploy_specs("w:1", blender_version="5.0.1", **option)
    # pods waiting for a GPU that no node has: the run's one line says what to change
    verdict = _what_to_do("renderer", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    assert "--gpu-workers" in verdict and "device plugin" in verdict


def test_the_mixed_cluster_shares_frames_by_last_digit_without_overlap():
    specs = {s["pipeline"]["name"]: s for s in deploy_specs("w:1", gpu=True, gpu_share=0.3, blender_version="5.0.1")}
    assert list(specs) == ["splitter", "renderer", GPU_RENDERER, "merger"]
    assert "gpu" not in specs["renderer"].get("resource_limits", {})
    assert specs["renderer"]["transform"]["env"][gpu.BACKEND_ENV] == "CPU"
    assert (specs["renderer"]["parallelism_spec"], specs[GPU_RENDERER]["parallelism_spec"]) == \
        ({"constant": 4}, {"constant": 1})

    def globbed(name: str) -> set[int]:
        tiles = next(c["pfs"] for c in specs[name]["input"]["join"] if c["pfs"]["name"] == "splitter")
        pattern = glob_regex(tiles["glob"])
        return {f for f in range(-20, 1000) for piece in ("0003", "0007_01")
                if pattern.match(f"/job/tiles/{f:06d}_{piece}.json")}

    on_gpu, on_cpu = globbed(GPU_RENDERER), globbed("renderer")
    assert not on_gpu & on_cpu and on_gpu | on_cpu == set(range(-20, 1000))
    assert len([f for f in on_gpu if 0 <= f < 1000]) == 300  # three digits of ten
    assert all(c["pfs"]["outer_join"] for c in specs["merger"]["input"]["join"])


def test_the_mixed_cluster_runs_on_the_faithful_farm(tmp_path):
    """``farm deploy --gpu --gpu-share 0.5``'s four specs, run by a pachd worker's rules: each renderer renders
    only its frames, the merger joins both, and a job with no frame for the GPU renderer still merges.
    Both renderers run on this machine's CPUs: what is shown is the sharing and the merge, not a GPU."""
    specs = {s["pipeline"]["name"]: s for s in deploy_specs("w:1", gpu=True, gpu_share=0.5)}
    gpu_digits, cpu_digits = gpu.frame_digits(0.5)
    state = tmp_path / "state"
    for name, frames in (("shot", [1, 4]), ("cpu-only", [3, 4])):
        assert [str(f)[-1] in gpu_digits for f in range(frames[0], frames[1] + 1)] == \
            ([True, True, False, False] if name == "shot" else [False, False])
        blend = make_scene(tmp_path / f"{name}.blend", size=[32, 16], frames=frames, dither=0.0)
        backend = LocalFarm(state, workers=2, faithful=True, specs=specs)
        out = tmp_path / name
        written = render(blend, JobSettings(tile=TileSize(16, 16)), out, backend=backend, state_dir=state)
        wanted = list(range(frames[0], frames[1] + 1))
        assert sorted(int(p.stem) for p in written) == wanted
        whole = render_whole(blend, tmp_path / f"{name}-whole", wanted)
        assert all(max_difference(out / f"{f:06d}.png", whole[f]) == 0 for f in wanted)
        job = next(p.parent.name for p in (state / "repos" / "blends").glob("*/job.json")
                   if json.loads(p.read_text())["display_name"] == name)
        for repo, digits in (("renderer", set(cpu_digits)), (GPU_RENDERER, set(gpu_digits))):
            rendered = {int(p.name) for p in (state / "repos" / repo / job).glob("*")} \
                if (state / "repos" / repo / job).exists() else set()
            assert rendered == {f for f in wanted if str(f)[-1] in digits}, (repo, rendered)



@NO_GPU
def test_the_gpu_bench_runs_and_says_it_found_no_gpu():
    done = subprocess.run([sys.executable, "bench/gpu.py", "--size", "64", "--samples", "4", "--tile", "32"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "CUDA    -" in done.stdout and "no GPU found: nothing to compare" in done.stdout


@NO_GPU
def test_cycles_enumeration_in_a_real_blender_binary(tmp_path):
    """The worker's device listing in Debian's Blender 5.2 LTS (Python 3.14), started as the local farm starts
    workers in the add-on (``Host(blender=...)``): its Cycles has CUDA and HIP but no OptiX, and finds no GPU."""
    import debian_root

    from farm_pipelines.host import Host

    root = debian_root.ensure("sid")
    result = tmp_path / "devices.json"
    argv, extra = Host(blender="blender").module_argv("farm_pipelines.blender.devices", str(result))
    done = debian_root.run(root, argv, binds=(ROOT, tmp_path), env={**extra, "FARM_SYS_PATH": str(ROOT)},
                           capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(result.read_text())
    assert set(found) == {"CUDA", "HIP"} and all(devices == [] for devices in found.values()), found
    assert gpu.choose("auto", {b: [gpu.Device.from_json(d) for d in ds] for b, ds in found.items()}).reason == \
        "Cycles found no OPTIX or CUDA or HIP or ONEAPI or METAL device here"


def test_a_mixed_clusters_progress_counts_both_renderers():
    """``farm render --pachd`` follows a job set holding ``renderer`` and ``renderer-gpu`` jobs: tiles of both count."""
    from python_pachyderm.proto.v2.pps import pps_pb2

    from farm_pipelines.pachyderm import _progress

    def job(name: str, total: int, processed: int, skipped: int = 0, failed: int = 0) -> pps_pb2.JobInfo:
        return pps_pb2.JobInfo(job=pps_pb2.Job(pipeline=pps_pb2.Pipeline(name=name), id="a" * 32),
                               state=pps_pb2.JOB_RUNNING, data_total=total, data_processed=processed,
                               data_skipped=skipped, data_failed=failed)

    infos = {"splitter": job("splitter", 1, 1), "renderer": job("renderer", 30, 10, failed=1),
             GPU_RENDERER: job(GPU_RENDERER, 70, 50)}
    infos["splitter"].state = pps_pb2.JOB_SUCCESS
    progress = _progress(infos, {"tiles": 100, "frames": 10}, done=False)
    assert (progress.stage, progress.tiles_done, progress.tiles_total, progress.tiles_failed) == \
        ("renderer", 60, 100, 1)


def test_tile_auto_counts_a_gpu_worker_as_a_fast_one_for_a_gpu_scene(tmp_path):
    from farm_pipelines.events import Info
    from farm_pipelines.tile_size import Costs, Shot, choose
    from farm_pipelines.tiles import Box

    given = gpu.Device("CUDA", "NVIDIA GeForce RTX 4070", "CUDA_NVIDIA GeForce RTX 4070_0000:01:00")
    backend = LocalFarm(tmp_path / "state", workers=2, gpus=[given], warn=lambda message: None)
    assert backend.speeds(True) == [gpu.GPU_SPEED, 1.0] and backend.speeds(False) == [1.0, 1.0]
    blend = make_scene(tmp_path / "gpu.blend", device="GPU", size=[160, 96], frames=[1, 1])
    said: list[str] = []
    render(blend, JobSettings(tile=TileSize(auto=True)),
           tmp_path / "out", backend=backend,
           on_event=lambda event: said.append(event.message) if isinstance(event, Info) else None)
    expected = choose(Shot((160, 96), Box(0, 0, 160, 96), 1, 0, 1), [gpu.GPU_SPEED, 1.0], Costs.from_env())
    assert f"tile size auto: {expected} for 1 frame(s) of 160x96 on 2 worker(s), 1 of them GPU" in said, said
    assert expected != choose(Shot((160, 96), Box(0, 0, 160, 96), 1, 0, 1), [1.0, 1.0], Costs.from_env())



def test_a_gpu_choice_sets_cycles_preferences_and_the_scene(tmp_path):
    """``use_devices`` in a Blender process: the backend, only the chosen device in use (the CPU entry off),
    and the scene on the GPU; the CPU choice puts the scene back on the CPU. Cycles accepts a device type
    its build has even with no such device, which is what lets this run here."""
    script = """
import json, sys, bpy
from farm_pipelines import gpu
from farm_pipelines.blender import devices
scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.device = "GPU"
prefs = bpy.context.preferences.addons["cycles"].preferences
devices.use_devices(scene, gpu.Choice("CUDA", (gpu.Device("CUDA", "test", "CUDA_test"),)))
seen = {"type": prefs.compute_device_type, "scene": scene.cycles.device,
        "cpu_used": [d.use for d in prefs.devices if d.type == "CPU"], "asks": devices.asks_for_gpu(scene)}
devices.use_devices(scene, gpu.Choice(None, reason="test"))
seen["after_cpu"] = scene.cycles.device
print("SEEN " + json.dumps(seen))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    seen = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("SEEN "))[5:])
    assert seen == {"type": "CUDA", "scene": "GPU", "cpu_used": [False], "asks": True, "after_cpu": "CPU"}, seen


def test_a_mixed_clusters_renderer_gpu_comes_before_the_merger():
    from python_pachyderm.proto.v2.pps import pps_pb2

    from farm_pipelines.pachyderm import _job_set_pipelines, _progress

    def job(name: str, state: int) -> pps_pb2.JobInfo:
        return pps_pb2.JobInfo(job=pps_pb2.Job(pipeline=pps_pb2.Pipeline(name=name)), state=state)

    infos = {"splitter": job("splitter", pps_pb2.JOB_SUCCESS), "renderer": job("renderer", pps_pb2.JOB_SUCCESS),
             GPU_RENDERER: job(GPU_RENDERER, pps_pb2.JOB_RUNNING), "merger": job("merger", pps_pb2.JOB_STARTING)}
    assert _job_set_pipelines(infos) == ["splitter", "renderer", GPU_RENDERER, "merger"]
    assert _progress(infos, {"tiles": 4, "frames": 1}, done=False).stage == "renderer"
