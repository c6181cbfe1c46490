"""Telling a pipeline that cannot run from one that is only slow, from the states pachd reports.

A job whose pipeline cannot start its workers never fails on pachd: it waits. pachd
says so only in the pipeline's own state. ``ppsMaster.pollPipelinePods``
(pachyderm v2.7.0 ``src/server/pps/server/poller.go``) watches the worker pods and calls
``setPipelineCrashing`` (``master.go``) with the Kubernetes message as the reason when a
container waits on ``ErrImagePull``, ``ImagePullBackOff``, ``InvalidImageName`` or
``CreateContainer(Config)Error``, or the pod is ``Unschedulable`` (the ``failures`` set in
``master.go``). ``monitorCrashingPipeline`` (``monitor.go``) moves it back to RUNNING once
all workers are up, checking every 15 s, so CRASHING also shows briefly while pods start:
only a pipeline that stays CRASHING for a while is reported. FAILURE is final: only an
update of the pipeline brings it out (``ppsutil.SetPipelineState``, ``src/internal/ppsutil/util.go``).
See docs/pachyderm_worker_rules.md section 8.
"""

from __future__ import annotations

import os
import time

from farm_pipelines.errors import BadInput

#: Seconds a pipeline may stay CRASHING before a run gives up on it.
CRASH_SECONDS_ENV = "FARM_PACHD_CRASH_SECONDS"
#: Four of pachd's 15 s checks: long enough for pods that are merely starting.
DEFAULT_CRASH_SECONDS = 60.0


def crash_seconds_from_env() -> float:
    """``FARM_PACHD_CRASH_SECONDS``, or the default; a bad value is one line."""
    text = os.environ.get(CRASH_SECONDS_ENV, "").strip()
    if not text:
        return DEFAULT_CRASH_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise BadInput(f"{CRASH_SECONDS_ENV}={text!r} is not a number of seconds: unset it "
                       f"(default {DEFAULT_CRASH_SECONDS:g}) or set e.g. 120")
    return seconds


def _what_to_do(pipeline: str, reason: str) -> str:
    pods = f"`kubectl describe pod -l pipelineName={pipeline}` says more"
    lowered = reason.lower()
    if "image" in lowered:
        return f"check the --image of `farm deploy` and that every node can pull it; {pods}"
    if "nvidia.com/gpu" in lowered:
        return (f"no node has a free GPU for it: deploy with --gpu-workers set to the number of GPUs the cluster "
                f"has, or check NVIDIA's device plugin (docs/cluster.md section 8); {pods}")
    if "nodes are available" in lowered or "unschedulable" in lowered:
        smaller = "deploy with a smaller --renderer-cpu" if pipeline == "renderer" else "lower its resource_requests"
        return f"no node fits its CPU, memory, GPU or node-selector requests: add or label a node, or {smaller}; {pods}"
    return pods


class CrashWatch:
    """Remembers since when each pipeline has been CRASHING, across the polls of one run."""

    def __init__(self, grace_seconds: float) -> None:
        self._grace = grace_seconds
        self._since: dict[str, float] = {}

    def verdict(self, pipeline: str, state: str, reason: str, where: str) -> str | None:
        """One line naming a pipeline that cannot run (``state`` as ``PIPELINE_CRASHING``), or None."""
        shown = " ".join(reason.split()).rstrip(".") or "no reason given"
        if state == "PIPELINE_FAILURE":
            return (f"pipeline {pipeline} failed on {where}: {shown}; fix its spec or image and run "
                    f"`farm deploy --apply` again (only an update clears a failed pipeline)")
        if state != "PIPELINE_CRASHING":
            self._since.pop(pipeline, None)
            return None
        since = self._since.setdefault(pipeline, time.monotonic())
        waited = time.monotonic() - since
        if waited < self._grace:
            return None
        return (f"pipeline {pipeline} has been crashing for {waited:.0f} s on {where}: {shown}; "
                f"{_what_to_do(pipeline, reason)}")
