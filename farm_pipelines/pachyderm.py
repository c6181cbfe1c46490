"""The boundary to a Pachyderm cluster: the only module that imports ``python_pachyderm``.

``PachydermBackend`` deploys the three specs, submits jobs to the ``blends`` repo,
follows their job sets and downloads the merged frames; ``farm_pipelines.cluster_specs``
prepares the specs it deploys. The local farm's side of the Worker API lives in
``farm_pipelines.local.worker_api_server`` and does without python-pachyderm.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlparse

import grpc
import python_pachyderm
import requests
import urllib3
from python_pachyderm import pfs as pach_pfs
from python_pachyderm.proto.v2.pfs import pfs_pb2
from python_pachyderm.proto.v2.pps import pps_pb2

from farm_pipelines import job_folder, job_parts, merged_frames
from farm_pipelines.backend import Progress
from farm_pipelines.blend_cache import file_sha256
from farm_pipelines.blender_versions import WORKER_VERSION_ENV, header_version, parse, require_readable, shown
from farm_pipelines.cluster_specs import SPEC_ANNOTATION
from farm_pipelines.errors import BadInput, FarmFailure
from farm_pipelines.job import Job, check_job_name
from farm_pipelines.manifest import describe_piece
from farm_pipelines.pipeline_health import CrashWatch, crash_seconds_from_env
from farm_pipelines.pipelines import PIPELINES, load_spec

T = TypeVar("T")


# -- The cluster side: deploy the DAG, submit jobs, follow them, fetch frames ---------------------

#: Bytes per upload message; well under pachd's 20 MB gRPC message limit.
UPLOAD_CHUNK = 2 * 1024 * 1024
#: Bytes per download read and write.
DOWNLOAD_CHUNK = 1024 * 1024
INPUT_REPO = "blends"
#: The files jobs carry, stored once by content; no pipeline reads it.
FILES_REPO = "blend-files"
MERGER = "merger"
BRANCH = "master"
DEFAULT_PORT = 30650
_DOWNLOAD_ATTEMPTS = 5
_TRANSFER_ERRORS = (grpc.RpcError, ConnectionError, requests.RequestException, urllib3.exceptions.HTTPError)
_TERMINAL = {pps_pb2.JOB_SUCCESS, pps_pb2.JOB_FAILURE, pps_pb2.JOB_KILLED, pps_pb2.JOB_UNRUNNABLE}
_TILE_PATH = re.compile(r"^/?([^/]+)/tiles/([^/]+)\.json$")


def parse_address(address: str, tls: bool | None = None) -> tuple[str, int, bool]:
    """``grpc://host:port``, ``grpcs://host:port`` or ``host:port`` -> (host, port, tls); an explicit ``tls`` wins."""
    text = address.strip()
    url = urlparse(text if "://" in text else f"grpc://{text}")
    try:
        port = url.port
    except ValueError:
        port = -1
    if (url.scheme not in ("grpc", "grpcs", "http", "https") or not url.hostname or port == -1
            or url.path not in ("", "/") or url.query or url.username):
        raise BadInput(f"pachd address {address!r} is not understood: use grpc://HOST:30650 or grpcs://HOST:443")
    secure = url.scheme in ("grpcs", "https")
    return url.hostname, port or (443 if secure else DEFAULT_PORT), secure if tls is None else tls


def pipeline_request(spec: dict, update: bool = False) -> pps_pb2.CreatePipelineRequest:
    """Parse a spec with python-pachyderm's own parser, so pachd sees exactly what ``pachctl`` would send."""
    request = python_pachyderm.parse_dict_pipeline_spec(spec)
    request.update = update
    return request


@dataclass(frozen=True)
class FailedDatum:
    """One datum that failed for good: which pipeline, which job and tile, and what its worker logged."""

    pipeline: str
    datum_id: str
    job: str
    what: str  # "frame 12 tile 3", "splitting", "merging"
    log_lines: tuple[str, ...]

    def describe(self) -> str:
        """One line: the datum's last error line (``error: ...``, as ``run_batched`` logs it), else its last line;
        ``err_cmd`` and pachd's own lines about it come after the error."""
        lines = self.log_lines
        shown = next((line for line in reversed(lines) if line.lower().startswith("error")),
                     lines[-1] if lines else "no log lines")
        return f"job {self.job} {self.what} (datum {self.datum_id[:12]}): {shown[:200]}"


class DatumsFailed(FarmFailure):
    """Pachyderm gave up on some datums; ``failures`` holds each one with its log lines."""

    def __init__(self, message: str, failures: list[FailedDatum]) -> None:
        super().__init__(message)
        self.failures = failures


@dataclass(frozen=True)
class JobStatus:
    """A job in the ``blends`` repo and how far the merger got with it."""

    name: str
    display_name: str
    frames: int
    failed_frames: int


class _Chunked(io.RawIOBase):
    """A binary file that never returns more than ``UPLOAD_CHUNK`` bytes per read (one gRPC message)."""

    def __init__(self, handle: BinaryIO) -> None:
        super().__init__()
        self._handle = handle

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        limit = UPLOAD_CHUNK if size is None or size < 0 else min(size, UPLOAD_CHUNK)
        return self._handle.read(limit)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _rpc_error(error: BaseException) -> grpc.RpcError | None:
    """python-pachyderm wraps some gRPC errors in ConnectionError; find the status underneath."""
    while error is not None:
        if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
            return error
        error = error.__cause__
    return None


def _status(error: BaseException) -> grpc.StatusCode | None:
    rpc = _rpc_error(error)
    return rpc.code() if rpc is not None else None


class PachydermBackend:
    """A ``Backend`` that runs jobs on a Pachyderm cluster through python-pachyderm.

    ``address`` is ``grpc://HOST:PORT``, ``grpcs://HOST:PORT`` or ``HOST:PORT``; None uses the
    active context of the user's pachctl config (``PACH_CONFIG`` or ``~/.pachyderm/config.json``).
    ``http_url`` (or ``FARM_PACHD_HTTP``), the base URL of pachd's HTTP file server, makes
    downloads use HTTP range requests; otherwise they use gRPC ``GetFile`` offsets. Both resume.
    The HTTP file server (``/pfs/...``) exists from pachd 2.8 on (``src/internal/fileserver``);
    the 2.7 pachd that python-pachyderm 7.6 pairs with serves only ``/archive/``, so leave it unset there.
    ``crash_seconds`` (or ``FARM_PACHD_CRASH_SECONDS``, default 60) is how long a pipeline the run
    waits on may stay CRASHING before the run fails (``pipeline_health``).
    """

    def __init__(self, address: str | None = None, token: str | None = None, tls: bool | None = None, *,
                 http_url: str | None = None, poll_seconds: float = 2.0, crash_seconds: float | None = None,
                 log: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None) -> None:
        """``log`` and ``warn`` receive what the workers said of their devices, as the local farm's do."""
        self.log = log or (lambda message: None)
        self.warn = warn or (lambda message: None)
        self._token = token or None
        self._http_url = (http_url or os.environ.get("FARM_PACHD_HTTP") or "").rstrip("/") or None
        self._poll = poll_seconds
        self._crash_seconds = crash_seconds_from_env() if crash_seconds is None else crash_seconds
        #: job name -> its parts and the ids of the upload commits its run made, in frame order
        self._job_commits: dict[str, list[tuple[Job, str]]] = {}
        #: upload commits whose merger job succeeded. Only those are read: a failed or unrunnable merger
        #: job's output commit reads as its parent's (v2.7.0 ``src/server/pfs/server/driver_file.go``,
        #: ``getFileSet``), which for a part is an older run's frames of the same part.
        self._merged_commits: set[str] = set()
        if address:
            host, port, secure = parse_address(address, tls)
            self.address = f"{'grpcs' if secure else 'grpc'}://{host}:{port}"
            self._client = self._call("connect", python_pachyderm.Client, host, port, auth_token=self._token,
                                      tls=secure, use_default_host=False)
        else:
            self._client = self._from_config()

    def _from_config(self) -> python_pachyderm.Client:
        path = Path(os.environ.get("PACH_CONFIG") or Path.home() / ".pachyderm" / "config.json")
        self.address = f"the pachctl context in {path}"
        if not path.is_file():
            raise FarmFailure(f"no pachd address given and no pachctl config at {path}: "
                              "pass --pachd grpc://HOST:30650 or run `pachctl connect` first")
        try:
            with path.open(encoding="utf-8") as handle:
                client = self._call("connect", python_pachyderm.Client.new_from_config, handle)
        except (python_pachyderm.ConfigError, ValueError, KeyError) as error:
            raise FarmFailure(f"the pachctl config {path} is unusable ({_one_line(error)}): "
                              "fix it with `pachctl config` or pass --pachd grpc://HOST:30650") from error
        self.address = client.address
        if self._token:
            client.auth_token = self._token
        return client

    # -- errors ----------------------------------------------------------------------------------

    def _call(self, doing: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one client call; any gRPC or connection failure becomes one ``FarmFailure`` line."""
        try:
            return call(*args, **kwargs)
        except (grpc.RpcError, ConnectionError) as error:
            raise self._explain(error, doing) from error

    def _list(self, doing: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> list:
        """Like ``_call`` for a streaming call: the stream is read inside, where its errors are caught."""
        return self._call(doing, lambda: list(call(*args, **kwargs)))

    def _explain(self, error: BaseException, doing: str) -> FarmFailure:
        code = _status(error)
        rpc = _rpc_error(error)
        details = _one_line(rpc.details() if rpc is not None else error) or "no details"
        where = f"pachd at {self.address}"
        if code in (grpc.StatusCode.UNAVAILABLE, None):
            return FarmFailure(f"cannot reach {where} to {doing} ({details}): check the --pachd address, "
                               "TLS (grpc:// or grpcs://) and that pachd is running (kubectl get pods)")
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return FarmFailure(f"{where} refused the token to {doing} ({details}): set FARM_PACHD_TOKEN "
                               "to a valid token (`pachctl auth get-robot-token`, on clusters with Enterprise auth)")
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return FarmFailure(f"{where} does not allow this token to {doing} ({details}): ask the cluster "
                               "admin for repoOwner on 'blends' and the farm pipelines")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return FarmFailure(f"{where} timed out while trying to {doing}: try again, or check the cluster")
        return FarmFailure(f"{where} could not {doing}: {code.name}: {details}")

    def _maybe(self, doing: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """Like ``_call``, but a missing repo, branch, file or pipeline gives None."""
        try:
            return self._call(doing, call, *args, **kwargs)
        except FarmFailure as failure:
            if _status(failure.__cause__) == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def _maybe_list(self, doing: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> list:
        return self._maybe(doing, self._list, doing, call, *args, **kwargs) or []

    def _read(self, doing: str, commit: Any, path: str) -> bytes:
        return self._call(doing, lambda: self._client.get_file(commit, path).read())

    # -- deploy ----------------------------------------------------------------------------------

    def deploy(self, specs: list[dict]) -> list[str]:
        """Create the ``blends`` repo and the pipelines, or update those whose spec changed.

        Returns one line per repo or pipeline saying what was done.
        """
        client = self._client
        done = []
        if self._maybe("look up the blends repo", client.inspect_repo, INPUT_REPO) is None:
            self._call("create the blends repo", client.create_repo, INPUT_REPO,
                       description="Render jobs: /<job>/scene.blend and /<job>/job.json")
            done.append(f"created repo {INPUT_REPO}")
        if self._maybe("look up the blend-files repo", client.inspect_repo, FILES_REPO) is None:
            self._create_files_repo()
            done.append(f"created repo {FILES_REPO}")
        for spec in specs:
            name = spec["pipeline"]["name"]
            found = self._maybe_list(f"look up pipeline {name}", client.inspect_pipeline, name, details=True)
            applied = found[0].details.metadata.annotations.get(SPEC_ANNOTATION) if found else None
            if applied == spec["metadata"]["annotations"][SPEC_ANNOTATION]:
                done.append(f"pipeline {name} is up to date")
                continue
            self._call(f"create pipeline {name}", client.create_pipeline_from_request,
                       pipeline_request(spec, update=bool(found)))
            done.append(f"{'updated' if found else 'created'} pipeline {name}")
        return done

    def _require_pipelines(self) -> None:
        for name in PIPELINES:
            if not self._maybe_list(f"look up pipeline {name}", self._client.inspect_pipeline, name):
                raise FarmFailure(f"pipeline {name!r} is not deployed on pachd at {self.address}: run "
                                  "`farm deploy --image REGISTRY/farm-worker:TAG --apply --pachd ...` first")

    def check_workers_read(self, job: Job, blend: Path) -> None:
        """Refuse a job whose copy (written by this machine's Blender) is newer than the workers' Blender."""
        found = self._maybe_list("look up the renderer's Blender version", self._client.inspect_pipeline,
                                 "renderer", details=True)
        claimed = found[0].details.transform.env.get(WORKER_VERSION_ENV) if found else None
        if not claimed:
            raise FarmFailure(f"the renderer on pachd at {self.address} does not say which Blender its image runs: "
                              "run `farm deploy --image REGISTRY/farm-worker:TAG --apply` again")
        workers = parse(claimed)
        require_readable(f"{job.display_name}: the job's copy is saved by this", header_version(blend), workers,
                         f"the farm's workers run (renderer on pachd at {self.address})",
                         f"rebuild the worker image with Blender {shown(header_version(blend))} or newer and "
                         f"run `farm deploy` again, or submit from Blender {shown(workers[:2])}")

    # -- Backend ---------------------------------------------------------------------------------

    def starting(self, job_name: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # the pipelines' pods are up already

    def run(self, job: Job, job_files: Path, on_progress: Callable[[Progress], None],
            cancel: threading.Event, on_frame: Callable[[int, Path], None] | None = None,
            plan: job_parts.FramePlan | None = None) -> None:
        """Submit the job as parts of its frames (``job_parts``), one commit each, then follow
        them in order, handing each part's frames to ``on_frame`` as soon as its merger job is done."""
        self._require_pipelines()
        self.check_workers_read(job, job_folder.scene_blend(Path(job_files)))
        renderer = load_spec("renderer")
        least = job_parts.min_tiles(renderer, int(renderer.get("parallelism_spec", {}).get("constant", 1)))
        parts = job_parts.split(job, plan, least)
        commits: list[tuple[Job, str]] = []
        self._job_commits[job.name] = commits
        lost: list[DatumsFailed] = []
        followed = 0
        try:
            carried = self.store_files(Path(job_files))
            for part in parts:  # all at once: pachd runs the parts' job sets one after another, pipelined
                commits.append((part, self.upload(part, Path(job_files), commits[0] if commits else None, carried)))
            before = Progress("splitter", frames_total=len(plan.frames) if plan else 0)
            for index, (part, commit_id) in enumerate(commits):
                latest = [Progress("splitter")]

                def report(progress: Progress, before: Progress = before, last: bool = index == len(commits) - 1,
                           latest: list[Progress] = latest) -> None:
                    latest[0] = progress
                    on_progress(_after(before, progress, last))

                try:
                    self.follow(commit_id, part, report, cancel)
                except DatumsFailed as failed:
                    if commit_id not in self._merged_commits:
                        raise
                    lost.append(failed)  # tiles lost (RECOVERED) but the part merged: its frames land
                followed = index + 1
                before = _after(before, latest[0], last=False)
                if on_frame:
                    with tempfile.TemporaryDirectory(prefix="farm-part-") as staging:
                        self._download_frames(part, commit_id, Path(staging), on_frame, frozenset())
        except BaseException:
            self._drop_parts([commit for _, commit in commits[followed + 1:]])
            raise
        if lost:
            raise lost[0]

    def _drop_parts(self, commit_ids: list[str]) -> None:
        """A run that stopped (cancelled, or a part failed) drops the parts it will not follow, newest
        first, so the cluster does not render frames nobody collects. ``dropCommitSet`` (v2.7.0
        ``src/server/pfs/server/commit_set.go``) deletes a commit set's commits and stops its jobs,
        but only for commits without children: hence newest first. A part another user's commit
        has since followed cannot be dropped, and renders on."""
        for commit_id in reversed(commit_ids):
            with contextlib.suppress(grpc.RpcError, ConnectionError):
                self._client.drop_commit(commit_id)

    def upload(self, job: Job, job_files: Path, first: tuple[Job, str] | None = None,
               carried: dict[str, str] | None = None) -> str:
        """Put the job folder under ``/<job>/`` of ``blends`` in one commit; returns its id.

        ``job.json`` is ``job``'s own (a part's names its frames). A later part (``first``: the
        job's first part and its commit) copies the first part's blend server-side instead of
        uploading it again; ``carried`` is ``store_files``' answer, when a part before asked it.

        ``scene/scene.blend`` and ``job.json`` (``job_folder``) are uploaded in fixed-size chunks. The
        files the job carries (``scene/files/...``) are stored by content in the ``blend-files`` repo (``/<sha256>``),
        each content uploaded once for every job and version, and copied from there server-side
        (``copy_file``: pachd v2.7.0 ``driver_file.go``, ``copyFile``, copies the fileset's index
        entries, which refer to the stored chunks, not the bytes). The job's old folder goes
        first, so the folder is the new version's tree. If anything fails the commit is dropped,
        so pipelines never see half a job.
        """
        blend_path, spec_path = job_folder.scene_blend(job_files), job_folder.job_json(job_files)
        for path in (blend_path, spec_path):
            if not path.is_file():
                raise BadInput(f"{path} is missing: the job folder must hold {job_folder.JOB_JSON} and "
                               f"{job_folder.SCENE}/{job_folder.BLEND}")
        carried = self.store_files(job_files) if carried is None else carried
        commit = self._call("start a commit in the blends repo", self._client.start_commit, INPUT_REPO, BRANCH,
                            description=f"render-farm job {job.display_name}")
        written = spec_path.read_bytes()
        # A part's job.json names its own frames; the whole job's is uploaded as prepare wrote it.
        spec = written if Job.from_json(json.loads(written)).name == job.name else \
            json.dumps(job.to_json(), indent=1, ensure_ascii=False).encode("utf-8")
        blend_in_repo = f"/{job.name}/{job_folder.SCENE}/{job_folder.BLEND}"
        try:
            with blend_path.open("rb") as blend, self._client.modify_file_client(commit) as writes:
                writes.delete_file(f"/{job.name}/")  # the folder becomes this version's tree
                if first is None:
                    writes.put_file_from_fileobj(blend_in_repo, _Chunked(blend))
                else:
                    writes.copy_file(pach_pfs.Commit(repo=INPUT_REPO, id=first[1]),
                                     f"/{first[0].name}/{job_folder.SCENE}/{job_folder.BLEND}", blend_in_repo)
                writes.put_file_from_fileobj(f"/{job.name}/{job_folder.JOB_JSON}", _Chunked(io.BytesIO(spec)))
                for rel, sha256 in carried.items():
                    writes.copy_file((FILES_REPO, BRANCH), f"/{sha256}", f"/{job.name}/{rel}")
            self._client.finish_commit(commit)
        except BaseException as error:
            with contextlib.suppress(grpc.RpcError, ConnectionError):
                self._client.drop_commit(commit.id)
            if isinstance(error, (grpc.RpcError, ConnectionError)):
                raise self._explain(error, f"upload job {job.name}") from error
            raise
        return commit.id

    def _create_files_repo(self) -> None:
        self._call("create the blend-files repo", self._client.create_repo, FILES_REPO,
                   description="Files render jobs carry, by content: /<sha256>")

    def store_files(self, job_files: Path) -> dict[str, str]:
        """Upload the carried files ``blend-files`` lacks, in one commit; returns {path in job: sha256}."""
        carried = {path.relative_to(job_files).as_posix(): file_sha256(path)
                   for path in sorted(job_folder.carried_files(job_files).rglob("*")) if path.is_file()}
        if not carried:
            return carried
        client = self._client
        if self._maybe("look up the blend-files repo", client.inspect_repo, FILES_REPO) is None:
            self._create_files_repo()  # a cluster deployed before jobs carried files
        stored = {info.file.path.strip("/") for info in
                  self._maybe_list("list the blend-files repo", client.list_file, (FILES_REPO, BRANCH), "/")}
        new = {sha256: job_files / rel for rel, sha256 in carried.items() if sha256 not in stored}
        contents = set(carried.values())
        size = sum(path.stat().st_size for path in new.values())
        self.log(f"blend-files on pachd: {len(new)} of the job's {len(contents)} file content(s) are new "
                 f"({size / 1e6:.1f} MB to upload), the rest are there already")
        if new:
            def put() -> None:  # the client sends at the end of its block: the files stay open until then
                with client.commit(FILES_REPO, BRANCH, description=f"{len(new)} file(s) render jobs carry") \
                        as commit, contextlib.ExitStack() as handles, client.modify_file_client(commit) as writes:
                    for sha256, path in sorted(new.items()):
                        writes.put_file_from_fileobj(f"/{sha256}", _Chunked(handles.enter_context(path.open("rb"))))
            self._call("upload the job's files to blend-files", put)
        return carried

    def follow(self, commit_id: str, job: Job, on_progress: Callable[[Progress], None],
               cancel: threading.Event) -> None:
        """Poll the job set of ``commit_id`` until the merger is done; raise on failed datums or jobs,
        and on a pipeline that cannot run its workers (``pipeline_health``)."""
        counts: dict[str, int] = {}
        watch = CrashWatch(self._crash_seconds)
        while True:
            if cancel.is_set():
                self._stop(commit_id)
                raise FarmFailure("cancelled")
            infos = {info.job.pipeline.name: info
                     for info in self._list("follow the job", self._client.inspect_job, commit_id)}
            splitter = infos.get("splitter")
            if not counts and splitter is not None and splitter.state == pps_pb2.JOB_SUCCESS:
                counts = self._plan(commit_id, job.name)
            merger = infos.get(MERGER)
            finished = merger is not None and merger.state in _TERMINAL
            if finished and merger.state == pps_pb2.JOB_SUCCESS:
                self._merged_commits.add(commit_id)  # its frames are this run's: fetch_frames may read them
            on_progress(_progress(infos, counts, done=finished and merger.state == pps_pb2.JOB_SUCCESS))
            if finished:
                break
            self._check_pipelines(infos, watch)
            cancel.wait(self._poll)
        if counts.get("gpu"):
            self._report_devices(infos)
        self._raise_failures(infos, job.name)

    def _report_devices(self, infos: dict[str, pps_pb2.JobInfo]) -> None:
        """For a scene that asks for a GPU: what each renderer pod rendered on, from the job's logs.

        The renderer prints ``renderer: device: ...`` when it loads a scene, and a warning when
        a GPU scene falls back to the CPU (``render_tile.TileRenderer``); pachd tags each line with
        its worker pod (``LogMessage.worker_id``).
        """
        for name in _job_set_pipelines(infos):
            info = infos.get(name)
            if info is None or not name.startswith("renderer"):
                continue
            lines = self._maybe_list(f"read the logs of the {name} job {info.job.id[:12]}",
                                     self._client.get_job_logs, name, info.job.id)
            said: dict[str, tuple[str, str]] = {}
            for line in lines:
                text = _one_line(line.message)
                device, warning = said.get(line.worker_id, ("", ""))
                if text.startswith("renderer: device: ") and not device:
                    device = text.removeprefix("renderer: device: ")
                elif text.startswith("warning: the scene asks for GPU rendering") and not warning:
                    warning = text.removeprefix("warning: ")
                said[line.worker_id] = (device, warning)
            for worker, (device, warning) in sorted(said.items()):
                if warning:
                    self.warn(f"{name} worker {worker}: {warning}")
                elif device:
                    self.log(f"{name} worker {worker}: renders on {device}")

    def _check_pipelines(self, infos: dict[str, pps_pb2.JobInfo], watch: CrashWatch) -> None:
        """Fail in one line if a pipeline whose job is unfinished cannot run: pachd's
        ``ppsMaster.pollPipelinePods`` (v2.7.0 ``src/server/pps/server/poller.go``) then sets it
        CRASHING with the pod's message as ``reason``, and its jobs wait without end."""
        for name in _job_set_pipelines(infos):
            if name in infos and infos[name].state in _TERMINAL:
                continue
            for info in self._maybe_list(f"check pipeline {name}", self._client.inspect_pipeline, name):
                verdict = watch.verdict(name, pps_pb2.PipelineState.Name(info.state), info.reason,
                                        f"pachd at {self.address}")
                if verdict:
                    raise FarmFailure(verdict)

    def _plan(self, commit_id: str, job_name: str) -> dict[str, int]:
        """How many tiles and frames the splitter planned for this job (other jobs share the repos)."""
        commit = pach_pfs.Commit(repo="splitter", id=commit_id)
        glob = self._client.glob_file
        facts = self._maybe("read the job's scene facts", lambda: self._client.get_file(
            commit, f"/{job_name}/scene.json").read())
        return {"tiles": len(self._maybe_list("count the job's tiles", glob, commit, f"/{job_name}/tiles/*")),
                "frames": len(self._maybe_list("count the job's frames", glob, commit, f"/{job_name}/frames/*")),
                "gpu": int(bool(facts and json.loads(facts).get("gpu")))}

    def _stop(self, commit_id: str) -> None:
        for info in self._list("look up the job to cancel", self._client.inspect_job, commit_id):
            if info.state not in _TERMINAL:
                name = info.job.pipeline.name
                self._maybe(f"stop the {name} job", self._client.stop_job, commit_id, name,
                            reason="cancelled from the render farm")

    def _raise_failures(self, infos: dict[str, pps_pb2.JobInfo], job_name: str) -> None:
        failures: list[FailedDatum] = []
        for name in _job_set_pipelines(infos):
            info = infos.get(name)
            if info is not None and (info.data_failed or info.data_recovered):
                failures += self._failed_datums(info)
        if failures:
            ours = [f for f in failures if f.job == job_name]
            others = sorted({f.job for f in failures if f.job != job_name})
            shown = "; ".join(f.describe() for f in (ours or failures)[:3])
            more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
            hint = (f"; datums of other job(s) {', '.join(others)} fail too: `farm clean JOB` removes them"
                    if others else "; `pachctl logs --job PIPELINE@ID` has the full logs")
            raise DatumsFailed(f"{len(failures)} datum(s) failed after retries: {shown}{more}{hint}", failures)
        for name in _job_set_pipelines(infos):
            info = infos.get(name)
            if info is not None and info.state != pps_pb2.JOB_SUCCESS:
                state = pps_pb2.JobState.Name(info.state).removeprefix("JOB_").lower()
                raise FarmFailure(f"the {name} job {info.job.id[:12]} ended {state}: "
                                  f"{_one_line(info.reason) or 'no reason given'}")

    def _failed_datums(self, info: pps_pb2.JobInfo) -> list[FailedDatum]:
        pipeline, job_id = info.job.pipeline.name, info.job.id
        wanted = pps_pb2.ListDatumRequest.Filter(state=[pps_pb2.DatumState.FAILED, pps_pb2.DatumState.RECOVERED])
        datums = self._list(f"list the failed {pipeline} datums", self._client.list_datum, pipeline, job_id,
                            datum_filter=wanted)
        if not datums:
            return []
        # The job's logs, matched here: batched user code logs with the datum set's logger, tagged with
        # the job only, and pachd's datum filter keeps only lines whose datumId field equals the datum
        # (v2.7.0 src/server/pps/server/api_server.go, getLogsLoki; src/internal/ppsutil/util.go,
        # FilterLogLines), so `datum=` finds none of them (docs/pachyderm_worker_rules.md section 4).
        logs = self._maybe_list(f"read the logs of the {pipeline} job {job_id[:12]}", self._client.get_job_logs,
                                pipeline, job_id)
        failures = []
        for datum in datums:
            paths = [f.file.path for f in datum.data]
            owner, what = _datum_subject(pipeline, paths)
            lines = tuple(line for line in (_one_line(m.message) for m in logs
                                            if _is_datums_line(m, datum.datum.id, paths)) if line)
            failures.append(FailedDatum(pipeline, datum.datum.id, owner, what, lines))
        return failures

    def fetch_frames(self, job: Job, out_dir: Path, on_frame: Callable[[int, Path], None],
                     skip: frozenset[int] = frozenset()) -> list[str]:
        """Download the frames of the job ``run`` uploaded, from each part's own merger commit.

        Every commit of a job set has the id of the commit that started it: pachd's
        ``propagateBranches`` (v2.7.0 ``src/server/pfs/server/driver.go``) opens each downstream
        output commit with the transaction's ``CommitSetID``, and ``propagateJobs``
        (``src/server/pps/server/api_server.go``) names the jobs with it too
        (docs/pachyderm_worker_rules.md sections 5 and 8). So ``merger@<upload id>`` holds this
        part's frames, whatever other users' jobs have moved the branch head to since.
        """
        commits = self._job_commits.get(job.name)
        if commits is None:
            raise FarmFailure(f"job {job.name} was not submitted from here, so its commit on pachd at "
                              f"{self.address} is unknown: submit it again")
        errors: list[str] = []
        for part, commit_id in commits:
            if commit_id in self._merged_commits:
                errors += self._download_frames(part, commit_id, Path(out_dir), on_frame, skip)
        return errors

    def _download_frames(self, part: Job, commit_id: str, out_dir: Path, on_frame: Callable[[int, Path], None],
                         skip: frozenset[int]) -> list[str]:
        """Download one part's merged frames not in ``skip``; returns its frames' errors."""
        commit = pach_pfs.Commit(repo=MERGER, id=commit_id)
        files = self._maybe_list(f"list the frames of job {part.name}", self._client.list_file, commit,
                                 f"/{part.name}")
        if not files:
            raise FarmFailure(f"job {part.name} has no merged frames in its commit {commit_id[:12]} on pachd at "
                              f"{self.address}: see `pachctl list job {commit_id}`")
        frames = sorted((frame, info) for info in files
                        if info.file_type == pfs_pb2.FileType.FILE
                        and (frame := merged_frames.frame_of(PurePosixPath(info.file.path).name)) is not None)
        out_dir.mkdir(parents=True, exist_ok=True)
        for frame, info in frames:
            if frame in skip:
                continue
            destination = out_dir / PurePosixPath(info.file.path).name
            self._download(commit, info, destination)
            on_frame(frame, destination)
        return [self._read("read a frame's failure", commit, info.file.path).decode("utf-8", "replace")
                for info in self._frame_failures(commit, part.name, files)]

    def _frame_failures(self, commit: pach_pfs.Commit | tuple[str, str], job_name: str,
                        listing: list) -> list:
        """The merger's ``/<job>/failed/<frame>.txt`` files (``merged_frames``), if the job has any."""
        if not any(info.file_type == pfs_pb2.FileType.DIR
                   and PurePosixPath(info.file.path).name == merged_frames.FAILED_DIR for info in listing):
            return []
        return sorted((info for info in self._maybe_list(f"list the failed frames of job {job_name}",
                                                         self._client.list_file, commit,
                                                         f"/{job_name}/{merged_frames.FAILED_DIR}")
                       if info.file_type == pfs_pb2.FileType.FILE), key=lambda info: info.file.path)

    def _download(self, commit: pach_pfs.Commit, info: pfs_pb2.FileInfo, destination: Path) -> None:
        """Download into a partial file named after the content hash, resuming it; rename when complete."""
        total = info.size_bytes
        partial = destination.with_name(f".{destination.name}.{info.hash.hex()[:16]}.part")
        for stale in destination.parent.glob(f".{destination.name}.*.part"):
            if stale != partial:
                stale.unlink()
        partial.touch()
        last_error: BaseException | None = None
        for _ in range(_DOWNLOAD_ATTEMPTS):
            have = partial.stat().st_size
            if have > total:
                partial.unlink()
                have = 0
            if have < total:
                try:
                    with partial.open("ab") as out:
                        if self._http_url:
                            self._http_range(commit, info.file.path, have, total, out)
                        else:
                            self._grpc_range(commit, info.file.path, have, out)
                except _TRANSFER_ERRORS as error:
                    if isinstance(error, (grpc.RpcError, ConnectionError)) and _status(error) not in (
                            grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, None):
                        raise self._explain(error, f"download {info.file.path}") from error
                    last_error = error
                    continue
            if partial.stat().st_size == total:
                os.replace(partial, destination)
                return
        raise FarmFailure(f"could not download {info.file.path} after {_DOWNLOAD_ATTEMPTS} tries "
                          f"({_one_line(last_error or 'the download kept coming up short')}); run the "
                          "fetch again to resume")

    def _grpc_range(self, commit: pach_pfs.Commit, path: str, offset: int, out: BinaryIO) -> None:
        source = self._client.get_file(commit, path, offset=offset)
        try:
            while chunk := source.read(DOWNLOAD_CHUNK):
                out.write(chunk)
        finally:
            source.close()

    def _http_range(self, commit: pach_pfs.Commit, path: str, offset: int, total: int,
                    out: BinaryIO) -> None:
        """pachd's file server (``/pfs/<project>/<repo>/<commit>/<path>``) takes ``Range: bytes=A-B``."""
        url = f"{self._http_url}/pfs/default/{commit.repo}/{commit.id}{path}"
        headers = {"Range": f"bytes={offset}-{total - 1}"}
        if self._client.auth_token:
            headers["authn-token"] = self._client.auth_token
        with requests.get(url, headers=headers, stream=True, timeout=60) as response:
            if response.status_code in (401, 403):
                raise FarmFailure(f"pachd's file server at {self._http_url} refused the token "
                                  f"(HTTP {response.status_code}): set FARM_PACHD_TOKEN to a valid token")
            if response.status_code not in (200, 206) or (offset and response.status_code != 206):
                raise FarmFailure(f"pachd's file server at {self._http_url} answered HTTP {response.status_code} "
                                  f"for {path}: check FARM_PACHD_HTTP")
            # read1 hands over every byte that arrived, so a broken connection loses nothing
            while chunk := response.raw.read1(DOWNLOAD_CHUNK, decode_content=True):
                out.write(chunk)

    # -- farm jobs / farm clean -----------------------------------------------------------------

    def list_jobs(self) -> list[JobStatus]:
        """Every job in ``blends``, with how many frames the merger wrote for it (its parts' together)."""
        jobs: dict[str, JobStatus] = {}
        for name in self._job_folders():
            job = job_parts.job_of(name)
            try:
                spec = json.loads(self._read(f"read job {name}", (INPUT_REPO, BRANCH), f"/{name}/job.json"))
                display = str(spec.get("display_name", job))
            except (FarmFailure, ValueError):
                display = job  # a job still uploading, or not ours: list it by its folder name
            outputs = self._maybe_list(f"list the frames of job {name}", self._client.list_file,
                                       (MERGER, BRANCH), f"/{name}")
            names = [PurePosixPath(o.file.path).name for o in outputs]
            failed = len(self._frame_failures((MERGER, BRANCH), name, outputs))
            frames = sum(merged_frames.frame_of(n) is not None for n in names)
            before = jobs.get(job, JobStatus(job, display, 0, 0))
            jobs[job] = JobStatus(job, before.display_name, before.frames + frames, before.failed_frames + failed)
        return list(jobs.values())

    def _job_folders(self) -> list[str]:
        """The folders of ``blends``: jobs, and parts of jobs (``job_parts``)."""
        return [PurePosixPath(entry.file.path).name
                for entry in self._maybe_list("list the jobs", self._client.list_file, (INPUT_REPO, BRANCH), "/")
                if entry.file_type == pfs_pb2.FileType.DIR and PurePosixPath(entry.file.path).name]

    def clean(self, job_name: str) -> str:
        """Delete ``/<job>/`` and its parts' folders from ``blends`` in a new commit; returns the commit id.

        Output repos belong to their pipelines: this commit makes the splitter, renderer
        and merger drop the job's tiles and frames in the job set it starts.
        """
        check_job_name(job_name)
        paths = []
        for folder in (name for name in self._job_folders() if job_parts.job_of(name) == job_name):
            files = self._maybe_list(f"list job {folder}", self._client.walk_file, (INPUT_REPO, BRANCH),
                                     f"/{folder}")
            paths += [f.file.path for f in files if f.file_type == pfs_pb2.FileType.FILE]
        if not paths:
            raise BadInput(f"there is no job {job_name!r} on pachd at {self.address}: see `farm jobs`")

        def delete() -> str:
            with self._client.commit(INPUT_REPO, BRANCH, description=f"render-farm clean {job_name}") as commit:
                with self._client.modify_file_client(commit) as writes:
                    for path in paths:
                        writes.delete_file(path)
            return commit.id

        return self._call(f"remove job {job_name}", delete)


def _datum_subject(pipeline: str, paths: list[str]) -> tuple[str, str]:
    """(job, what) of a datum from its input paths: a tile for the renderer, the stage otherwise."""
    for path in paths:
        match = _TILE_PATH.match(path)
        if match and describe_piece(match.group(2)):
            return match.group(1), describe_piece(match.group(2))
    job = next((p.strip("/").split("/")[0] for p in paths if p.strip("/")), "?")
    return job, {"splitter": "splitting", "merger": "merging"}.get(pipeline, pipeline)


def _is_datums_line(message: pps_pb2.LogMessage, datum_id: str, paths: list[str]) -> bool:
    """A log line of this datum: tagged with it (``err_cmd``'s output and unbatched code are), or naming
    its ID or its tile file, as the renderer's error line and its ``err_cmd`` do (``renderer/__main__.py``)."""
    if message.datum_id == datum_id or datum_id in message.message:
        return True
    return any(_TILE_PATH.match(p) and f"tile {p.strip('/')} " in message.message for p in paths)


def _job_set_pipelines(infos: dict[str, pps_pb2.JobInfo]) -> list[str]:
    """The farm's pipelines in DAG order; any other the job set holds (a mixed cluster's ``renderer-gpu``)
    comes before the merger, which waits for it."""
    return [*PIPELINES[:-1], *sorted(set(infos) - set(PIPELINES)), PIPELINES[-1]]


def _after(before: Progress, part: Progress, last: bool) -> Progress:
    """A part's progress counted after the parts before it; the job is done only with its last part."""
    tiles_done, tiles_total = before.tiles_done + part.tiles_done, before.tiles_total + part.tiles_total
    return Progress(part.stage if last or part.stage != "done" else "merger", tiles_done, tiles_total,
                    before.tiles_failed + part.tiles_failed, before.frames_merged + part.frames_merged,
                    max(before.frames_total, before.frames_merged + part.frames_total), part.eta_seconds)


def _progress(infos: dict[str, pps_pb2.JobInfo], counts: dict[str, int], done: bool) -> Progress:
    """A ``Progress`` for this job out of the job set's counters, which also count other jobs' (skipped) datums."""
    stage = next((name for name in _job_set_pipelines(infos)
                  if name not in infos or infos[name].state not in _TERMINAL), "done" if done else "merger")
    stage = "renderer" if stage.startswith("renderer") else stage  # one renderer stage, whichever is busy
    # A mixed cluster's GPU renderer (``renderer-gpu``) takes a share of the frames: count both.
    renderers = [info for name, info in infos.items() if name.startswith("renderer")]
    ours = counts.get("tiles", 0)
    frames_total = counts.get("frames", 0)
    if not renderers:
        return Progress(stage, tiles_total=ours, frames_total=frames_total)
    finished = sum(r.data_processed + r.data_skipped for r in renderers)
    failed = sum(r.data_failed + r.data_recovered for r in renderers)
    data_total = sum(r.data_total for r in renderers)
    others = max(0, data_total - ours) if ours else 0
    total = ours or data_total
    tiles_done = min(total, max(0, finished - others))
    eta = None
    running = [r for r in renderers if r.HasField("started") and r.state not in _TERMINAL]
    if running and 0 < tiles_done < total:
        elapsed = max(0.0, time.time() - min(r.started.ToSeconds() for r in running))
        eta = elapsed / tiles_done * (total - tiles_done)
    return Progress(stage, tiles_done=tiles_done, tiles_total=total, tiles_failed=min(total, failed),
                    frames_merged=frames_total if done else 0, frames_total=frames_total, eta_seconds=eta)
