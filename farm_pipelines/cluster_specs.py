"""The pipeline specs as ``farm deploy`` sends them to a cluster: the worker image, its Blender, and where
render pods may run. Plain dictionaries, no python-pachyderm: ``farm_pipelines.pachyderm`` parses and sends them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json

from farm_pipelines import gpu as gpus
from farm_pipelines.blender_versions import WORKER_VERSION_ENV, parse, shown
from farm_pipelines.errors import BadInput
from farm_pipelines.pfs import RENDERER_INPUTS, THREADS_ENV, spec_threads
from farm_pipelines.pipelines import PIPELINES, load_spec

#: The annotation carrying a digest of the spec we applied, so that re-deploying changes only what changed.
SPEC_ANNOTATION = "render-farm/spec-sha256"
#: Label of nodes that may run GPU renderers (``kubectl label node NODE render-farm/gpu=true``).
GPU_NODE_LABEL = "render-farm/gpu"
#: The taint GPU node pools carry (GKE sets it; NVIDIA's GPU operator docs use it): GPU renderers tolerate it.
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "EXISTS", "effect": "NO_SCHEDULE"}
#: A mixed cluster's second renderer: GPU pods taking ``--gpu-share`` of the frames.
GPU_RENDERER = "renderer-gpu"


def spec_digest(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode("utf-8")).hexdigest()


def deploy_specs(image: str, gpu: bool = False, renderer_nodes: dict[str, str] | None = None,
                 blender_version: str | None = None, renderer_cpu: float | None = None,
                 renderer_priority_class: str | None = None, renderer_tolerations: list[dict] | None = None,
                 gpu_backend: str | None = None, gpu_share: float | None = None,
                 gpu_workers: int | None = None) -> list[dict]:
    """The specs as they go to pachd: the worker ``image`` set, and an annotation with their digest.

    ``gpu`` makes renderers render on one NVIDIA GPU each (``resource_limits.gpu``), on nodes
    labelled ``render-farm/gpu=true`` and tolerating ``nvidia.com/gpu``, with Cycles' backend
    ``gpu_backend`` (``gpu.choose``; default auto), on ``gpu_workers`` pods (default 1: a house has
    few GPUs, and a pod waiting for one that does not exist leaves the pipeline CRASHING). With
    ``gpu_share`` the cluster is mixed (``mixed_specs``): the CPU renderer stays, and a
    ``renderer-gpu`` takes that share of the frames.
    ``renderer_nodes`` adds node-selector labels for renderers only (spot/preemptible pools).
    ``blender_version`` is the image's Blender (default: this machine's bpy, which an image built from
    the same requirements.txt has); it goes into each transform's environment, where submissions read
    it and the renderer checks it against its own Blender. ``renderer_cpu`` replaces the renderer's
    CPU request. Each transform gets ``FARM_THREADS`` from its spec's CPU request (``spec_threads``).
    ``renderer_priority_class`` (``scheduling_spec.priority_class_name``) lets the cluster's own pods
    (pachd, etcd, postgres) preempt render pods, and ``renderer_tolerations`` (the spec's
    ``tolerations``, as ``parse_toleration`` makes them) let renderers onto tainted spot nodes.
    """
    if not image.strip():
        raise BadInput("the worker image is empty: pass --image REGISTRY/farm-worker:TAG")
    if renderer_cpu is not None and not 0 < renderer_cpu < float("inf"):
        raise BadInput(f"--renderer-cpu {renderer_cpu} is not a positive number of CPUs: pass e.g. 2 or 0.5")
    backend = gpus.parse_backend(gpu_backend)
    for option, value in (("--gpu-share", gpu_share), ("--gpu-backend", gpu_backend), ("--gpu-workers", gpu_workers)):
        if value is not None and not gpu:
            raise BadInput(f"{option} needs --gpu: it sets how the GPU renderers render")
    if gpu_workers is not None and not (isinstance(gpu_workers, int) and gpu_workers >= 1):
        raise BadInput(f"--gpu-workers {gpu_workers} must be 1 or more: one renderer pod per GPU of the cluster")
    blender = shown(parse(blender_version or _local_bpy_version()))
    specs = [load_spec(name) for name in PIPELINES]
    if gpu_share is not None:
        specs = mixed_specs(specs, gpu_share)
    for spec in specs:
        name = spec["pipeline"]["name"]
        spec["transform"]["image"] = image.strip()
        env = spec["transform"].setdefault("env", {})
        env[WORKER_VERSION_ENV] = blender
        if name.startswith("renderer"):
            if renderer_cpu is not None:
                spec.setdefault("resource_requests", {})["cpu"] = renderer_cpu
            selector = dict(renderer_nodes or {})
            tolerations = list(renderer_tolerations or [])
            on_gpu = gpu and (gpu_share is None or name == GPU_RENDERER)
            if on_gpu:
                spec.setdefault("resource_limits", {})["gpu"] = {"type": "nvidia.com/gpu", "number": 1}
                selector[GPU_NODE_LABEL] = "true"
                tolerations.append(GPU_TOLERATION)
                env[gpus.BACKEND_ENV] = backend
                spec["parallelism_spec"] = {"constant": gpu_workers or 1}
            elif gpu:  # the CPU half of a mixed cluster renders GPU scenes on its CPUs, by design
                env[gpus.BACKEND_ENV] = "CPU"
            if selector:
                spec.setdefault("scheduling_spec", {}).setdefault("node_selector", {}).update(selector)
            if renderer_priority_class:
                spec.setdefault("scheduling_spec", {})["priority_class_name"] = renderer_priority_class
            if tolerations:
                spec["tolerations"] = tolerations
        if threads := spec_threads(spec):
            spec["transform"]["env"][THREADS_ENV] = str(threads)
        spec.setdefault("metadata", {}).setdefault("annotations", {})[SPEC_ANNOTATION] = spec_digest(spec)
    return specs


def mixed_specs(specs: list[dict], gpu_share: float) -> list[dict]:
    """Splitter, CPU renderer, GPU renderer, merger: the renderers share the frames by last digit.

    Pachyderm runs every datum of a pipeline's input on that pipeline's workers, which
    are all alike, so GPU and CPU pods need two pipelines over the same splitter
    output, each globbing its own frames (``gpu.frame_digits``, ``gpu.tile_glob``): a
    frame never mixes devices. The merger joins both with ``outer_join`` everywhere,
    because pachd drops a join key some input lacks unless the inputs present are
    outer (v2.7.0 ``src/server/worker/datum/worker.go``, ``processMergeTask``), and a
    short job can leave one renderer without a frame of it.
    """
    splitter, renderer, merger = (json.loads(json.dumps(spec)) for spec in specs)
    gpu_digits, cpu_digits = gpus.frame_digits(gpu_share)
    gpu_renderer = json.loads(json.dumps(renderer))
    gpu_renderer["pipeline"]["name"] = GPU_RENDERER
    gpu_renderer["description"] = (f"Renders the tiles of frames ending in {', '.join(gpu_digits)} on GPU "
                                   f"nodes; the renderer has the others. " + renderer["description"])
    for spec, digits in ((renderer, cpu_digits), (gpu_renderer, gpu_digits)):
        tiles = next(child["pfs"] for child in spec["input"]["join"] if child["pfs"]["name"] == "splitter")
        tiles["glob"] = gpus.tile_glob(digits)
    joined = merger["input"]["join"]
    joined.append({"pfs": {"name": RENDERER_INPUTS[1], "repo": GPU_RENDERER, "glob": "/(*)", "join_on": "$1",
                           "lazy": True}})
    for child in joined:
        child["pfs"]["outer_join"] = True
    return [splitter, renderer, gpu_renderer, merger]


#: Kubernetes' taint effects, as Pachyderm's pipeline spec spells them (pps.proto ``TaintEffect``).
TAINT_EFFECTS = {"NoSchedule": "NO_SCHEDULE", "PreferNoSchedule": "PREFER_NO_SCHEDULE", "NoExecute": "NO_EXECUTE"}


def parse_toleration(text: str) -> dict:
    """``KEY=VALUE:EFFECT`` or ``KEY:EFFECT`` (as ``kubectl taint`` writes a taint) as a spec toleration.

    Pachyderm's spec takes its own enum names (``EQUAL``/``EXISTS``, ``NO_SCHEDULE``...), not
    Kubernetes' ``Equal``/``NoSchedule``, which its parser refuses.
    """
    taint, sep, effect = text.rpartition(":")
    key, has_value, value = taint.partition("=")
    if not sep or not key.strip() or effect not in TAINT_EFFECTS:
        raise BadInput(f"--renderer-toleration {text!r} is not KEY=VALUE:EFFECT or KEY:EFFECT with EFFECT one of "
                       f"{', '.join(TAINT_EFFECTS)}, e.g. render-farm/spot=true:NoSchedule")
    toleration = {"key": key.strip(), "operator": "EQUAL" if has_value else "EXISTS",
                  "effect": TAINT_EFFECTS[effect]}
    if has_value:
        toleration["value"] = value.strip()
    return toleration


def _local_bpy_version() -> str:
    try:
        return importlib.metadata.version("bpy")
    except importlib.metadata.PackageNotFoundError:
        raise BadInput("the worker image's Blender version is unknown here (no bpy installed): pass "
                       "--blender-version, e.g. 5.0.1") from None
