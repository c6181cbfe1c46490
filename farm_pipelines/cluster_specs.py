"""The pipeline specs as ``farm deploy`` sends them to a cluster: the worker image, its Blender, and where
render pods may run. Plain dictionaries, no python-pachyderm: ``farm_pipelines.pachyderm`` parses and sends them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json

from farm_pipelines.blender_versions import WORKER_VERSION_ENV, parse, shown
from farm_pipelines.errors import BadInput
from farm_pipelines.pfs import THREADS_ENV, spec_threads
from farm_pipelines.pipelines import PIPELINES, load_spec

#: The annotation carrying a digest of the spec we applied, so that re-deploying changes only what changed.
SPEC_ANNOTATION = "render-farm/spec-sha256"
#: Label of nodes that may run GPU renderers (``kubectl label node NODE render-farm/gpu=true``).
GPU_NODE_LABEL = "render-farm/gpu"


def spec_digest(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode("utf-8")).hexdigest()


def deploy_specs(image: str, gpu: bool = False, renderer_nodes: dict[str, str] | None = None,
                 blender_version: str | None = None, renderer_cpu: float | None = None,
                 renderer_priority_class: str | None = None, renderer_tolerations: list[dict] | None = None,
                 ) -> list[dict]:
    """The three specs as they go to pachd: the worker ``image`` set, and an annotation with their digest.

    ``gpu`` asks for one NVIDIA GPU per renderer worker on nodes labelled ``render-farm/gpu=true``;
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
    blender = shown(parse(blender_version or _local_bpy_version()))
    specs = []
    for name in PIPELINES:
        spec = load_spec(name)
        spec["transform"]["image"] = image.strip()
        spec["transform"].setdefault("env", {})[WORKER_VERSION_ENV] = blender
        if name == "renderer":
            if renderer_cpu is not None:
                spec.setdefault("resource_requests", {})["cpu"] = renderer_cpu
            selector = dict(renderer_nodes or {})
            if gpu:
                spec.setdefault("resource_limits", {})["gpu"] = {"type": "nvidia.com/gpu", "number": 1}
                selector[GPU_NODE_LABEL] = "true"
            if selector:
                spec.setdefault("scheduling_spec", {}).setdefault("node_selector", {}).update(selector)
            if renderer_priority_class:
                spec.setdefault("scheduling_spec", {})["priority_class_name"] = renderer_priority_class
            if renderer_tolerations:
                spec["tolerations"] = list(renderer_tolerations)
        if threads := spec_threads(spec):
            spec["transform"]["env"][THREADS_ENV] = str(threads)
        spec.setdefault("metadata", {}).setdefault("annotations", {})[SPEC_ANNOTATION] = spec_digest(spec)
        specs.append(spec)
    return specs


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
