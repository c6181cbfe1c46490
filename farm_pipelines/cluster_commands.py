"""``farm deploy``, ``farm jobs`` and ``farm clean``: the commands that only make sense with a Pachyderm cluster.

Each command finds pachd from ``--pachd``, the token from ``FARM_PACHD_TOKEN``, and
otherwise from the user's pachctl config. Errors are raised as ``BadInput`` or
``FarmFailure``; ``farm``'s main turns them into one line and exit code 2 or 1.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from farm_pipelines.cluster_specs import deploy_specs, parse_toleration
from farm_pipelines.errors import BadInput

if TYPE_CHECKING:  # python-pachyderm and gRPC take a good part of a second to import: a local render needs neither
    from farm_pipelines.pachyderm import PachydermBackend


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``deploy``, ``jobs`` and ``clean JOB`` on the ``farm`` command's subparsers."""
    deploy = subparsers.add_parser(
        "deploy", help="print or apply the Pachyderm pipeline specs for a worker image",
        description="Without --apply, print the specs (for `pachctl create pipeline -f -`); with --apply, "
                    "create the blends repo and the pipelines on pachd, updating only those that changed.")
    deploy.add_argument("--image", required=True, help="worker image, e.g. registry.example:5000/farm-worker:1")
    deploy.add_argument("--apply", action="store_true", help="create or update the pipelines on pachd")
    deploy.add_argument("--gpu", action="store_true",
                        help="renderers render on one NVIDIA GPU each, on nodes labelled render-farm/gpu=true "
                             "(tolerating the nvidia.com/gpu taint); scenes set to CPU still render on CPUs")
    deploy.add_argument("--gpu-backend",
                        help="with --gpu: Cycles backend for GPU renderers: auto (OptiX, then CUDA, HIP, oneAPI, "
                             "Metal), one of those, or CPU; default auto")
    deploy.add_argument("--gpu-workers", metavar="N", type=int,
                        help="with --gpu: GPU renderer pods, one per GPU of the cluster; default 1")
    deploy.add_argument("--gpu-share", metavar="FRACTION", type=float,
                        help="with --gpu: a mixed cluster, where a renderer-gpu pipeline takes this share of "
                             "the frames (in tenths, by last digit) and CPU renderers the rest")
    deploy.add_argument("--renderer-node", metavar="LABEL=VALUE", action="append", default=[],
                        help="node selector for renderers only, e.g. render-farm/spot=true (repeatable)")
    deploy.add_argument("--blender-version", metavar="X.Y.Z",
                        help="the Blender in the worker image (its label render-farm.blender-version); default: "
                             "this machine's bpy, as in an image built from the same requirements.txt. "
                             "Submissions of scenes saved by a newer Blender are refused")
    deploy.add_argument("--renderer-cpu", metavar="CPUS", type=float,
                        help="CPUs each renderer worker requests (default: the spec's, 2); each pipeline's "
                             "Blender runs that many threads (FARM_THREADS, rounded up)")
    deploy.add_argument("--renderer-priority-class", metavar="NAME",
                        help="Kubernetes PriorityClass of render pods, e.g. a low one so the cluster's own "
                             "pods and friends' work preempt them (docs/cluster.md)")
    deploy.add_argument("--renderer-toleration", metavar="KEY=VALUE:EFFECT", action="append", default=[],
                        help="let renderers onto nodes with this taint, e.g. render-farm/spot=true:NoSchedule "
                             "(repeatable)")
    _add_pachd(deploy)
    deploy.set_defaults(func=deploy_command)

    jobs = subparsers.add_parser("jobs", help="list the jobs on the Pachyderm cluster")
    _add_pachd(jobs)
    jobs.set_defaults(func=jobs_command)

    clean = subparsers.add_parser("clean", help="remove a job's files from the Pachyderm repos")
    clean.add_argument("job", metavar="JOB", help="the job name, as `farm jobs` shows it")
    _add_pachd(clean)
    clean.set_defaults(func=clean_command)


def _add_pachd(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pachd", metavar="grpc://HOST:PORT",
                        help="pachd address (default: the pachctl config); token from FARM_PACHD_TOKEN")


def backend_from_args(args: argparse.Namespace, log: Callable[[str], None] | None = None,
                      warn: Callable[[str], None] | None = None) -> PachydermBackend:
    """The backend for ``--pachd`` and ``FARM_PACHD_TOKEN``; shared with ``farm render --pachd``,
    which passes ``log`` and ``warn`` for what the workers say of their devices."""
    from farm_pipelines.pachyderm import PachydermBackend

    return PachydermBackend(args.pachd, token=os.environ.get("FARM_PACHD_TOKEN") or None, log=log, warn=warn)


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--renderer-node {pair!r} is not LABEL=VALUE, e.g. render-farm/spot=true")
        labels[key.strip()] = value.strip()
    return labels


def deploy_command(args: argparse.Namespace) -> int:
    """Print the specs, or apply them and say what changed."""
    specs = deploy_specs(args.image, gpu=args.gpu, renderer_nodes=_labels(args.renderer_node),
                         blender_version=args.blender_version, renderer_cpu=args.renderer_cpu,
                         renderer_priority_class=(args.renderer_priority_class or "").strip() or None,
                         renderer_tolerations=[parse_toleration(text) for text in args.renderer_toleration],
                         gpu_backend=args.gpu_backend, gpu_share=args.gpu_share, gpu_workers=args.gpu_workers)
    if not args.apply:
        for spec in specs:
            print(json.dumps(spec, indent=2))
        return 0
    backend = backend_from_args(args)
    for line in backend.deploy(specs):
        print(line)
    return 0


def jobs_command(args: argparse.Namespace) -> int:
    jobs = backend_from_args(args).list_jobs()
    if not jobs:
        print("no jobs")
    for job in jobs:
        failed = f", {job.failed_frames} failed" if job.failed_frames else ""
        print(f"{job.name}\t{job.frames} frame(s) merged{failed}\t{job.display_name}")
    return 0


def clean_command(args: argparse.Namespace) -> int:
    commit = backend_from_args(args).clean(args.job)
    print(f"removed job {args.job} in commit {commit}; the pipelines now drop its tiles and frames")
    return 0
