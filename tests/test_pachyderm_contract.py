"""CONTRACT TEST of the Pachyderm backend against python-pachyderm's generated gRPC protocol.

The server here is NOT pachd: it is an in-process gRPC server built on python-pachyderm 7.6.0's
generated servicers (PFS, PPS), which target pachd v2.7.0.

What it proves: the requests ``PachydermBackend`` sends are well-formed for that protocol and carry
what we mean (bytes, paths, specs, offsets, filters, the token), and the backend handles the
answers and error statuses pachd gives (NOT_FOUND, ALREADY_EXISTS, UNAUTHENTICATED, a broken stream).
Each behaviour of ``FakePachd`` names, in a comment, the pachd function it follows (v2.7.0; v2.8.0 for HTTP).

What it does not prove: anything of a real pachd's storage (chunks, filesets, commit history),
scheduling (job sets, datums, pipeline states are scripted by each test), workers or Loki.
The project's own stand-ins: an in-memory dict per repo for storage, counter commit IDs, scripted
``InspectJobSet`` / ``ListDatum`` / pipeline states, a ``*``-only glob, and an HTTP file server that
pachd has only from v2.8.0. docs/cluster.md is how to try the real thing.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import socket
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import python_pachyderm
from google.protobuf import empty_pb2, wrappers_pb2
from python_pachyderm.proto.v2.pfs import pfs_pb2, pfs_pb2_grpc
from python_pachyderm.proto.v2.pps import pps_pb2, pps_pb2_grpc

from farm_pipelines import cli
from farm_pipelines.cluster_specs import SPEC_ANNOTATION, deploy_specs
from farm_pipelines.errors import BadInput, FarmFailure
from farm_pipelines.job import Job, JobSettings
from farm_pipelines.job_parts import FramePlan
from farm_pipelines.pachyderm import MERGER, UPLOAD_CHUNK, DatumsFailed, PachydermBackend
from farm_pipelines.pipelines import PIPELINES

TOKEN = "s3cret-token"
JOB = Job("shot_1-0a1b2c3d", "shot 1", JobSettings())


class FakePachd(pfs_pb2_grpc.APIServicer, pps_pb2_grpc.APIServicer):
    """Answers the PFS and PPS calls the backend makes, recording every request."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, bytes]] = {}  # repo -> path -> content (the master head)
        self.commit_files: dict[tuple[str, str], dict[str, bytes]] = {}  # (repo, id) -> files of a scripted commit
        self.staging: dict[str, tuple[str, dict[str, bytes]]] = {}  # open commit id -> (repo, files)
        self.commits: list[tuple[str, str, str]] = []  # (repo, id, description) of finished commits
        self.dropped: list[str] = []
        self.chunks: dict[str, list[int]] = {}  # path -> sizes of the AddFile messages that wrote it
        self.deletes: list[str] = []
        self.copies: list[tuple[str, str, str]] = []  # (source repo, source path, destination path)
        self.pipelines: dict[str, pps_pb2.CreatePipelineRequest] = {}
        self.create_requests: list[pps_pb2.CreatePipelineRequest] = []
        self.jobset_script: list[list[pps_pb2.JobInfo]] = []
        self.jobset_calls: list[str] = []
        self.datums: dict[tuple[str, str], list[pps_pb2.DatumInfo]] = {}
        self.datum_filters: list[list[int]] = []
        self.logs: list[pps_pb2.LogMessage] = []  # every worker log line, as pachd stores them
        self.logs_requests: list[pps_pb2.GetLogsRequest] = []
        self.stopped: list[str] = []
        self.get_file_requests: list[tuple[str, str, int]] = []
        self.break_get_file_after: int | None = None
        self.pipeline_states: dict[str, tuple[int, str]] = {}  # name -> (PipelineState, reason)
        self._ids = 0

    def _next_id(self) -> str:
        self._ids += 1
        return f"{self._ids:032x}"

    # -- PFS --  (paths below are in pachyderm v2.7.0 src/server/pfs/server/ unless given in full)
    def InspectRepo(self, request, context):  # noqa: N802
        # api_server.go, InspectRepo -> driver.go, inspectRepo: an unknown repo is ErrRepoNotFound, which
        # src/server/pfs/pfs.go maps to NOT_FOUND. Sizes, auth info and details are not filled in here.
        if request.repo.name not in self.files:
            context.abort(grpc.StatusCode.NOT_FOUND, f"repo {request.repo.name} not found")
        return pfs_pb2.RepoInfo(repo=request.repo)

    def CreateRepo(self, request, context):  # noqa: N802
        # api_server.go, CreateRepo -> driver.go, createRepo. Stand-in's own: an existing repo is a no-op,
        # where pachd (update unset) answers ErrRepoExists; the backend creates only after InspectRepo's NOT_FOUND.
        self.files.setdefault(request.repo.name, {})
        return empty_pb2.Empty()

    def StartCommit(self, request, context):  # noqa: N802
        # api_server.go, StartCommit -> driver.go, startCommit: a new open commit on the branch, NOT_FOUND for
        # an unknown repo. Stand-in's own: a counter ID (pachd's is a random hex UUID), the open commit starts
        # as a copy of the head's files, and the head shows them only at FinishCommit.
        repo = request.branch.repo.name
        if repo not in self.files:
            context.abort(grpc.StatusCode.NOT_FOUND, f"repo {repo} not found")
        commit_id = self._next_id()
        self.staging[commit_id] = (repo, dict(self.files[repo]))
        self.descriptions = getattr(self, "descriptions", {}) | {commit_id: request.description}
        return pfs_pb2.Commit(branch=request.branch, id=commit_id)

    def ModifyFile(self, request_iterator, context):  # noqa: N802
        # api_server.go, ModifyFile (readCommit takes the set_commit message) and modifyFile: add_file with raw
        # bytes appends them (putFileRaw, uw.Put with append), add_file without a source writes an empty file,
        # delete_file removes the path (deleteFile; src/internal/storage/fileset/unordered_writer.go, Delete
        # removes a whole directory for a path ending in "/"). Stand-in's own: a dict, no chunks or datum
        # tags, and a path without "/" also removes what lies under it; chunk sizes are recorded for the tests.
        files = None
        for message in request_iterator:
            kind = message.WhichOneof("body")
            if kind == "set_commit":
                files = self.staging[message.set_commit.id][1]
            elif kind == "add_file":
                path = message.add_file.path
                data = message.add_file.raw.value
                if message.add_file.HasField("raw") and data:
                    files[path] = files.get(path, b"") + data
                    self.chunks.setdefault(path, []).append(len(data))
                else:
                    files.setdefault(path, b"")
            elif kind == "delete_file":
                path = message.delete_file.path
                self.deletes.append(path)
                for name in [p for p in files if p == path or p.startswith(path.rstrip("/") + "/")]:
                    del files[name]
            elif kind == "copy_file":
                # modifyFile's CopyFile case -> driver_file.go, copyFile: the source commit of any repo (an empty
                # id is its branch head; inspectCommit), every entry at or under the source path mapped to the
                # destination (NewIndexFilter / NewIndexMapper), written without append (uw.Copy deletes the
                # destination first). pachd copies index entries, not bytes; here the dict's bytes are shared.
                # Stand-in's own: a source commit other than a head or a scripted one reads as the head.
                copy = message.copy_file
                source = self._files(copy.src.commit, context)
                src, dst = copy.src.path.rstrip("/"), copy.dst.rstrip("/")
                matched = {p: d for p, d in source.items() if p == src or p.startswith(src + "/")}
                if not matched:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"file {copy.src.path} not found")
                for path, data in matched.items():
                    files[dst + path[len(src):]] = data
                self.copies.append((copy.src.commit.branch.repo.name, copy.src.path, copy.dst))
        return empty_pb2.Empty()

    def FinishCommit(self, request, context):  # noqa: N802
        # api_server.go, FinishCommit -> driver.go, finishCommit (marks the commit finishing; the fileset is
        # composed later). Stand-in's own: the staged files become the repo's head at once.
        repo, files = self.staging.pop(request.commit.id)
        self.files[repo] = files
        self.commits.append((repo, request.commit.id, self.descriptions[request.commit.id]))
        return empty_pb2.Empty()

    def DropCommitSet(self, request, context):  # noqa: N802
        # api_server.go, DropCommitSet -> commit_set.go, dropCommitSet (the commits of the set, which must have
        # no children). Stand-in's own: it only forgets the open commit and records the ID.
        self.dropped.append(request.commit_set.id)
        self.staging.pop(request.commit_set.id, None)
        return empty_pb2.Empty()

    def _files(self, commit: pfs_pb2.Commit, context) -> dict[str, bytes]:
        """The files of ``repo@id``: a commit a test scripted has its own, any other reads as the head.

        The project's own stand-in: pachd keeps every commit and opens the asked one (driver_file.go,
        openCommit); here only commits a test scripted have files of their own, the rest read as the head.
        """
        repo = commit.branch.repo.name
        if (repo, commit.id) in self.commit_files:
            return self.commit_files[(repo, commit.id)]
        if repo not in self.files:
            context.abort(grpc.StatusCode.NOT_FOUND, f"repo {repo} not found")
        return self.files[repo]

    def _entries(self, commit: pfs_pb2.Commit, context) -> dict[str, bytes | None]:
        """Files and (as None) directories of a commit.

        pachd's filesets hold directory entries ending in "/" (src/internal/storage/fileset, Clean / IsDir);
        deriving them from the file paths is the stand-in's own.
        """
        entries: dict[str, bytes | None] = {}
        for path, data in self._files(commit, context).items():
            entries[path] = data
            parts = path.strip("/").split("/")
            for depth in range(1, len(parts)):
                entries["/" + "/".join(parts[:depth]) + "/"] = None
        return entries

    @staticmethod
    def _info(repo: str, path: str, data: bytes | None) -> pfs_pb2.FileInfo:
        kind = pfs_pb2.FileType.DIR if data is None else pfs_pb2.FileType.FILE
        return pfs_pb2.FileInfo(file=pfs_pb2.File(path=path), file_type=kind, size_bytes=len(data or b""),
                                hash=hashlib.sha256(data or b"").digest())

    def ListFile(self, request, context):  # noqa: N802
        # api_server.go, ListFile -> driver_file.go, listFile: the immediate children of the path (pathIsChild,
        # paths.go), directories ending in "/", in path order. Stand-in's own: NOT_FOUND for a path with no
        # children (listFile in v2.7.0 wraps no NewErrOnEmpty); the backend reads both as "nothing there".
        repo, base = request.file.commit.branch.repo.name, request.file.path.rstrip("/")
        children = {p: d for p, d in self._entries(request.file.commit, context).items()
                    if p.rstrip("/").rpartition("/")[0] == base}
        if not children:
            context.abort(grpc.StatusCode.NOT_FOUND, f"path {request.file.path} not found")
        for path, data in sorted(children.items()):
            yield self._info(repo, path, data)

    def WalkFile(self, request, context):  # noqa: N802
        # api_server.go, WalkFile -> driver_file.go, walkFile: every entry at or under the path, in path order.
        # Stand-in's own: an empty walk streams nothing, where walkFile answers NOT_FOUND (NewErrOnEmpty)
        # for any path but "/".
        repo, base = request.file.commit.branch.repo.name, request.file.path.rstrip("/") + "/"
        for path, data in sorted(self._entries(request.file.commit, context).items()):
            if path.startswith(base):
                yield self._info(repo, path, data)

    def GlobFile(self, request, context):  # noqa: N802
        # api_server.go, GlobFile -> driver_file.go, globFile with paths.go, globMatchFunction (ohmyglob, "/"
        # separator, a directory matched without its trailing "/"). Stand-in's own: only "*" is understood.
        repo = request.commit.branch.repo.name
        pattern = re.compile(re.escape(request.pattern).replace(r"\*", "[^/]+") + "/?")
        for path, data in sorted(self._entries(request.commit, context).items()):
            if pattern.fullmatch(path):
                yield self._info(repo, path, data)

    def GetFile(self, request, context):  # noqa: N802
        # api_server.go, GetFile -> driver_file.go, getFile: the content from request.offset (chunk.WithOffsetBytes),
        # streamed as BytesValue messages (grpcutil.WithStreamingBytesWriter), ErrFileNotFound (NOT_FOUND,
        # src/server/pfs/pfs.go) for a missing file. Stand-in's own: 64 KiB messages, and break_get_file_after,
        # which cuts the stream with UNAVAILABLE as a dropped connection would.
        repo, path = request.file.commit.branch.repo.name, request.file.path
        self.get_file_requests.append((repo, request.file.commit.id, request.offset))
        data = self._files(request.file.commit, context).get(path)
        if data is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"file {path} not found")
        data = data[request.offset:]
        if self.break_get_file_after is not None:
            cut, self.break_get_file_after = self.break_get_file_after, None
            for start in range(0, cut, 65536):
                yield wrappers_pb2.BytesValue(value=data[start:min(cut, start + 65536)])
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset by peer")
        for start in range(0, len(data), 65536):
            yield wrappers_pb2.BytesValue(value=data[start:start + 65536])

    # -- PPS --
    def InspectPipeline(self, request, context):  # noqa: N802
        spec = self.pipelines.get(request.pipeline.name)
        if spec is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"pipeline {request.pipeline.name} not found")
        # The state and reason stand in for pachd's ppsMaster.pollPipelinePods (v2.7.0
        # src/server/pps/server/poller.go), which calls setPipelineCrashing (master.go) with the
        # waiting container's or unschedulable pod's Kubernetes message; a test scripts them here.
        state, reason = self.pipeline_states.get(request.pipeline.name, (pps_pb2.PIPELINE_RUNNING, ""))
        return pps_pb2.PipelineInfo(pipeline=spec.pipeline, state=state, reason=reason,
                                    details=pps_pb2.PipelineInfo.Details(metadata=spec.metadata,
                                                                         transform=spec.transform))

    def CreatePipeline(self, request, context):  # noqa: N802
        # src/server/pps/server/api_server.go, CreatePipeline -> CreatePipelineInTransaction: an existing
        # pipeline without update is ErrPipelineAlreadyExists (ALREADY_EXISTS, src/server/pps/pps.go); with
        # update it is replaced. Stand-in's own: the request is stored as is; no spec repo, no validation.
        name = request.pipeline.name
        if name in self.pipelines and not request.update:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"pipeline {name} already exists")
        self.create_requests.append(request)
        self.pipelines[name] = request
        return empty_pb2.Empty()

    def InspectJobSet(self, request, context):  # noqa: N802
        # pps/server/api_server.go, InspectJobSet: one JobInfo per pipeline job of the commit set, each with the
        # set's ID (forEachCommitInJob, InspectJob). Stand-in's own: the JobInfos are a test's script, one step
        # per call, the last step repeated; wait is ignored.
        self.jobset_calls.append(request.job_set.id)
        step = self.jobset_script[min(len(self.jobset_calls), len(self.jobset_script)) - 1]
        for info in step:
            info = pps_pb2.JobInfo.FromString(info.SerializeToString())
            info.job.id = request.job_set.id
            yield info

    def ListDatum(self, request, context):  # noqa: N802
        # pps/server/api_server.go, ListDatum: the job's datums that pass request.Filter.Allow (their state is
        # one of filter.state). Stand-in's own: the datums are scripted; no pagination, no input listing.
        self.datum_filters.append(list(request.filter.state))
        for datum in self.datums.get((request.job.pipeline.name, request.job.id), []):
            if datum.state in request.filter.state:
                yield datum

    def GetLogs(self, request, context):  # noqa: N802
        # Follows pachd's ppsutil.FilterLogLines (v2.7.0 src/internal/ppsutil/util.go), as getLogsLoki
        # (src/server/pps/server/api_server.go) also does after its substring query: a line is sent
        # only if its pipeline and job fields equal the request's job, and, with a datum asked for,
        # its datumId field equals that datum. Lines batched user code writes have no datumId
        # (transform/worker.go, handleDatumSetBatching gives it the set's job logger).
        self.logs_requests.append(request)
        for line in self.logs:
            if request.HasField("job") and (line.pipeline_name, line.job_id) != (request.job.pipeline.name,
                                                                              request.job.id):
                continue
            if request.HasField("datum") and line.datum_id != request.datum.id:
                continue
            yield line

    def StopJob(self, request, context):  # noqa: N802
        # pps/server/api_server.go, StopJob -> stopJob (in a transaction). Stand-in's own: only records the
        # pipeline; no job state changes.
        self.stopped.append(request.job.pipeline.name)
        return empty_pb2.Empty()


class _TokenCheck(grpc.ServerInterceptor):
    """pachd with auth on: a call without the right ``authn-token`` fails with UNAUTHENTICATED.

    Follows pachyderm v2.7.0 src/internal/middleware/auth/interceptor.go (InterceptUnary / InterceptStream),
    which reads the token from the ``authn-token`` metadata (src/constants/constants.go, ContextTokenKey);
    src/server/auth/server/api_server.go, getAuthenticatedUser answers auth.ErrBadToken (src/auth/auth.go).
    Stand-in's own: one fixed token, and every method needs it (pachd's per-method rules are not modelled).
    """

    def intercept_service(self, continuation, details):
        if dict(details.invocation_metadata).get("authn-token") == TOKEN:
            return continuation(details)
        handler = continuation(details)

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "provided auth token is corrupted or has expired")

        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)


@pytest.fixture
def pachd():
    fake = FakePachd()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=[_TokenCheck()],
                         options=[("grpc.max_receive_message_length", 20 * 1024 * 1024)])
    pfs_pb2_grpc.add_APIServicer_to_server(fake, server)
    pps_pb2_grpc.add_APIServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    fake.address = f"grpc://127.0.0.1:{port}"
    yield fake
    server.stop(None)


def backend(fake: FakePachd, **options) -> PachydermBackend:
    return PachydermBackend(fake.address, token=TOKEN, poll_seconds=0.01, **options)


def job_info(pipeline: str, state: int, **counts) -> pps_pb2.JobInfo:
    return pps_pb2.JobInfo(job=pps_pb2.Job(pipeline=pps_pb2.Pipeline(name=pipeline)), state=state, **counts)


def seed_splitter(fake: FakePachd, job: str, frames: int, tiles_per_frame: int) -> None:
    repo = fake.files.setdefault("splitter", {})
    for frame in range(1, frames + 1):
        repo[f"/{job}/frames/{frame:06d}/manifest.json"] = b"{}"
        for index in range(tiles_per_frame):
            repo[f"/{job}/tiles/{frame:06d}_{index:04d}.json"] = b"{}"


@pytest.fixture
def job_files(tmp_path: Path) -> Path:
    folder = tmp_path / "job"
    folder.mkdir()
    # A Blender 5.0 header (the workers' version is checked against it), then binary with and without
    # newlines, larger than two upload chunks.
    blob = b"BLENDER17-01v0500" + bytes(range(256)) * 4096 + b"\n" * 300_000 + hashlib.sha256(b"x").digest() * 70_000
    (folder / "scene").mkdir()
    (folder / "scene" / "scene.blend").write_bytes(blob)
    (folder / "job.json").write_text(json.dumps(JOB.to_json()), encoding="utf-8")
    return folder


def test_deploy_sends_the_parsed_specs_and_only_changes(pachd):
    farm = backend(pachd)
    specs = deploy_specs("registry.local:5000/farm-worker:1")
    assert farm.deploy(specs) == ["created repo blends", "created repo blend-files"] + [
        f"created pipeline {n}" for n in PIPELINES]
    sent = pachd.create_requests
    assert [r.pipeline.name for r in sent] == list(PIPELINES)  # inputs exist before their consumers
    for request, spec in zip(sent, specs, strict=True):
        assert request == python_pachyderm.parse_dict_pipeline_spec(spec)  # exactly the spec, update unset
        assert request.transform.image == "registry.local:5000/farm-worker:1"
        assert request.metadata.annotations[SPEC_ANNOTATION] == spec["metadata"]["annotations"][SPEC_ANNOTATION]
    renderer = sent[1]
    assert renderer.transform.datum_batching and renderer.datum_tries == 3
    assert renderer.transform.env["FARM_THREADS"] == "2"  # its CPU request, which pachd tells no worker
    assert [i.pfs.repo for i in renderer.input.join] == ["blends", "splitter"]

    assert farm.deploy(specs) == [f"pipeline {n} is up to date" for n in PIPELINES]
    assert len(pachd.create_requests) == 3

    farm.deploy(deploy_specs("registry.local:5000/farm-worker:2"))
    updates = pachd.create_requests[3:]
    assert [(r.pipeline.name, r.update) for r in updates] == [(n, True) for n in PIPELINES]
    assert {r.transform.image for r in updates} == {"registry.local:5000/farm-worker:2"}


def test_run_uploads_one_commit_in_chunks_and_follows_the_job_set(pachd, job_files):
    farm = backend(pachd)
    farm.deploy(deploy_specs("farm-worker:1"))
    seed_splitter(pachd, JOB.name, frames=2, tiles_per_frame=3)  # 6 tiles of ours
    seed_splitter(pachd, "other-job", frames=1, tiles_per_frame=4)  # 4 tiles of an earlier job, skipped
    ok, running = pps_pb2.JOB_SUCCESS, pps_pb2.JOB_RUNNING
    pachd.jobset_script = [
        [job_info("splitter", running)],
        [job_info("splitter", ok), job_info("renderer", running, data_total=10, data_skipped=4, data_processed=2)],
        [job_info("splitter", ok), job_info("renderer", ok, data_total=10, data_skipped=4, data_processed=6),
         job_info("merger", running)],
        [job_info("splitter", ok), job_info("renderer", ok, data_total=10, data_skipped=4, data_processed=6),
         job_info("merger", ok, data_total=2, data_processed=1, data_skipped=1)],
    ]
    seen = []
    farm.run(JOB, job_files, seen.append, threading.Event())

    blob = (job_files / "scene" / "scene.blend").read_bytes()
    assert pachd.files["blends"][f"/{JOB.name}/scene/scene.blend"] == blob
    assert json.loads(pachd.files["blends"][f"/{JOB.name}/job.json"]) == JOB.to_json()
    sizes = pachd.chunks[f"/{JOB.name}/scene/scene.blend"]
    assert max(sizes) <= UPLOAD_CHUNK and len(sizes) == -(-len(blob) // UPLOAD_CHUNK)  # fixed chunks, not lines
    assert [(repo, desc) for repo, _, desc in pachd.commits if repo == "blends"] == [
        ("blends", "render-farm job shot 1")]
    commit_id = pachd.commits[-1][1]
    assert set(pachd.jobset_calls) == {commit_id}  # followed the job set of the upload commit

    assert [p.stage for p in seen] == ["splitter", "renderer", "merger", "done"]
    assert (seen[1].tiles_done, seen[1].tiles_total, seen[1].frames_total) == (2, 6, 2)
    assert (seen[-1].tiles_done, seen[-1].tiles_total, seen[-1].frames_merged) == (6, 6, 2)
    assert seen[-1].fraction == pytest.approx(1.0)


def test_failed_datum_names_its_tile_and_log_lines(pachd, job_files):
    farm = backend(pachd)
    farm.deploy(deploy_specs("farm-worker:1"))
    seed_splitter(pachd, JOB.name, frames=3, tiles_per_frame=4)
    pachd.jobset_script = [[
        job_info("splitter", pps_pb2.JOB_SUCCESS),
        job_info("renderer", pps_pb2.JOB_FAILURE, data_total=12, data_processed=11, data_failed=1),
        job_info("merger", pps_pb2.JOB_UNRUNNABLE, reason="an upstream job failed"),
    ]]
    bad, good = "d" * 64, "e" * 64
    tile = f"{JOB.name}/tiles/000003_0002.json"
    datum = pps_pb2.DatumInfo(datum=pps_pb2.Datum(id=bad), state=pps_pb2.DatumState.FAILED, data=[
        pfs_pb2.FileInfo(file=pfs_pb2.File(path=f"/{JOB.name}")), pfs_pb2.FileInfo(file=pfs_pb2.File(path=f"/{tile}"))])
    ok_datum = pps_pb2.DatumInfo(datum=pps_pb2.Datum(id=good), state=pps_pb2.DatumState.SUCCESS)

    def script_datums(*_):  # the job id is only known once the upload commit exists
        job_id = pachd.commits[-1][1]
        pachd.datums[("renderer", job_id)] = [datum, ok_datum]

        def line(text: str, datum_id: str = "", job: str = job_id, pipeline: str = "renderer"):
            return pps_pb2.LogMessage(pipeline_name=pipeline, job_id=job, datum_id=datum_id, user=True,
                                      message=text + "\n")

        pachd.logs[:] = [
            # batched user code: tagged with the job only, as pachd's handleDatumSetBatching logs it
            line(f"renderer: {JOB.name} frame 1 piece 0000 done"),
            line(f"error: tile {tile} (datum {bad}): RuntimeError('out of GPU memory')"),
            line(f"error: tile {JOB.name}/tiles/000002_0001.json (datum {good}): a try that was retried"),
            # err_cmd's output goes through the datum's logger (RunUserErrorHandlingCode), so it is tagged
            line(f"renderer: recovered tile {tile} (datum {bad}), frame 3 tile 2, after a failed try", bad),
            line("beginning to run user error handling code", bad),
            line(f"error: tile {tile} (datum {bad}): the same tile in another job", job="f" * 32),
        ]

    with pytest.raises(DatumsFailed) as caught:
        farm.run(JOB, job_files, script_datums, threading.Event())
    message = str(caught.value)
    assert "\n" not in message
    assert "frame 3 tile 2" in message and "out of GPU memory" in message and JOB.name in message
    [failure] = caught.value.failures
    assert failure.log_lines == (f"error: tile {tile} (datum {bad}): RuntimeError('out of GPU memory')",
                                 f"renderer: recovered tile {tile} (datum {bad}), frame 3 tile 2, after a failed try",
                                 "beginning to run user error handling code")
    assert pachd.datum_filters == [[pps_pb2.DatumState.FAILED, pps_pb2.DatumState.RECOVERED]]
    # one request for the whole job's logs: a datum filter would find no line of batched user code
    [asked] = pachd.logs_requests
    assert (asked.job.pipeline.name, asked.job.id, asked.HasField("datum")) == ("renderer", pachd.commits[-1][1], False)


def test_cancel_stops_the_running_jobs(pachd, job_files):
    farm = backend(pachd)
    farm.deploy(deploy_specs("farm-worker:1"))
    pachd.jobset_script = [[job_info("splitter", pps_pb2.JOB_SUCCESS), job_info("renderer", pps_pb2.JOB_RUNNING),
                            job_info("merger", pps_pb2.JOB_CREATED)]]
    cancel = threading.Event()
    with pytest.raises(FarmFailure, match="cancelled"):
        farm.run(JOB, job_files, lambda progress: cancel.set(), cancel)
    assert pachd.stopped == ["renderer", "merger"]


IMAGE_PULL = 'Back-off pulling image "registry.local:5000/farm-worker:9"'
UNSCHEDULABLE = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available."


@pytest.mark.parametrize(("reason", "hint"), [(IMAGE_PULL, "every node can pull it"),
                                              (UNSCHEDULABLE, "no node fits")])
def test_a_pipeline_that_stays_crashing_fails_the_run_in_one_line_within_the_bound(pachd, job_files, reason, hint):
    farm = backend(pachd, crash_seconds=0.5)
    farm.deploy(deploy_specs("farm-worker:1"))
    pachd.pipeline_states["renderer"] = (pps_pb2.PIPELINE_CRASHING, reason)
    pachd.jobset_script = [[job_info("splitter", pps_pb2.JOB_SUCCESS), job_info("renderer", pps_pb2.JOB_RUNNING),
                            job_info("merger", pps_pb2.JOB_CREATED)]]  # the jobs wait, as on pachd
    cancel = threading.Event()
    give_up = threading.Timer(60, cancel.set)  # without the check the run would wait for ever
    give_up.start()
    started = time.monotonic()
    try:
        with pytest.raises(FarmFailure) as caught:
            farm.run(JOB, job_files, lambda progress: None, cancel)
    finally:
        give_up.cancel()
    waited = time.monotonic() - started
    message = str(caught.value)
    assert "\n" not in message and message.startswith("pipeline renderer has been crashing for ")
    assert reason.rstrip(".") in message and hint in message
    assert "kubectl describe pod -l pipelineName=renderer" in message
    assert 0.5 <= waited < 30  # not before the bound, and not much after it


def test_a_failed_pipeline_fails_the_run_at_once(pachd, job_files):
    farm = backend(pachd, crash_seconds=600)
    farm.deploy(deploy_specs("farm-worker:1"))
    pachd.pipeline_states["merger"] = (pps_pb2.PIPELINE_FAILURE, "could not update resources after 3 attempts")
    pachd.jobset_script = [[job_info("splitter", pps_pb2.JOB_RUNNING)]]
    cancel = threading.Event()
    give_up = threading.Timer(60, cancel.set)
    give_up.start()
    try:
        with pytest.raises(FarmFailure, match=r"^pipeline merger failed on pachd at .*: could not update "
                                              r"resources after 3 attempts; .*farm deploy --apply"):
            farm.run(JOB, job_files, lambda progress: None, cancel)
    finally:
        give_up.cancel()


def test_crashing_while_pods_start_is_not_a_failure(pachd, job_files):
    """pachd's monitorCrashingPipeline (monitor.go) clears CRASHING once the workers are up."""
    farm = backend(pachd)  # the default bound, 60 s, is far longer than this run
    farm.deploy(deploy_specs("farm-worker:1"))
    pachd.pipeline_states["renderer"] = (pps_pb2.PIPELINE_CRASHING, IMAGE_PULL)
    ok = pps_pb2.JOB_SUCCESS
    pachd.jobset_script = [[job_info("splitter", ok), job_info("renderer", pps_pb2.JOB_RUNNING)]] * 3 + [
        [job_info("splitter", ok), job_info("renderer", ok), job_info("merger", ok)]]
    seen = []
    farm.run(JOB, job_files, seen.append, threading.Event())
    assert seen[-1].stage == "done"


def test_a_bad_crash_bound_is_one_line(monkeypatch, pachd):
    monkeypatch.setenv("FARM_PACHD_CRASH_SECONDS", "soon")
    with pytest.raises(BadInput, match="FARM_PACHD_CRASH_SECONDS='soon' is not a number of seconds"):
        PachydermBackend(pachd.address, token=TOKEN)


def test_run_without_pipelines_says_to_deploy_and_uploads_nothing(pachd, job_files):
    with pytest.raises(FarmFailure, match="farm deploy"):
        backend(pachd).run(JOB, job_files, lambda progress: None, threading.Event())
    assert pachd.commits == []


def seed_frames(fake: FakePachd, commit_id: str | None = None) -> dict[str, bytes]:
    """The merger's output at the head and, given ``commit_id``, in the merger commit of that job set.

    That commit has the upload's id because pachd's propagateBranches (v2.7.0
    src/server/pfs/server/driver.go) opens every downstream output commit with the commit-set id.
    """
    frames = {f"/{JOB.name}/{n:06d}.exr": hashlib.sha256(bytes([n])).digest() * 12_000 for n in (1, 2)}
    fake.files["merger"] = dict(frames)
    fake.files["merger"][f"/{JOB.name}/failed/000003.txt"] = b"frame 3: tile 1 missing"
    fake.files["merger"]["/other-job/000001.exr"] = b"not ours"
    if commit_id is not None:
        fake.commit_files[("merger", commit_id)] = dict(fake.files["merger"])
    return frames


def submitted(fake: FakePachd, job_files: Path, job: Job = JOB, **options) -> tuple[PachydermBackend, str]:
    """A backend that has run ``job`` to the end, and the id of the upload commit it made."""
    farm = backend(fake, **options)
    farm.deploy(deploy_specs("farm-worker:1"))
    fake.jobset_script = [[job_info(name, pps_pb2.JOB_SUCCESS) for name in PIPELINES]]
    farm.run(job, job_files, lambda progress: None, threading.Event())
    return farm, fake.commits[-1][1]


def test_fetch_frames_downloads_resumes_a_partial_file_and_returns_errors(pachd, job_files, tmp_path):
    farm, commit_id = submitted(pachd, job_files)
    frames = seed_frames(pachd, commit_id)
    first = frames[f"/{JOB.name}/000001.exr"]
    digest = hashlib.sha256(first).hexdigest()[:16]
    out = tmp_path / "frames"
    out.mkdir()
    (out / f".000001.exr.{digest}.part").write_bytes(first[:1000])  # left by an interrupted fetch
    got = []
    before = len(pachd.get_file_requests)  # the run read the splitter's scene.json
    errors = farm.fetch_frames(JOB, out, lambda frame, path: got.append((frame, path.name)))
    assert got == [(1, "000001.exr"), (2, "000002.exr")]
    assert {p.name for p in out.iterdir()} == {"000001.exr", "000002.exr"}
    for path, data in frames.items():
        assert (out / Path(path).name).read_bytes() == data
    assert errors == ["frame 3: tile 1 missing"]
    offsets = [(repo, commit, offset) for repo, commit, offset in pachd.get_file_requests[before:]]
    assert offsets[0] == ("merger", commit_id, 1000)  # resumed, from the job's own commit
    assert {commit for _, commit, _ in offsets} == {commit_id}


def test_a_recovered_tile_costs_only_its_frame_and_is_named_with_its_log_lines(pachd, job_files, tmp_path):
    """The renderer's err_cmd exited 0, so pachd counted the tile RECOVERED (v2.7.0 datum.go,
    Datum.handleFailed: no FailedId), the renderer's job succeeded and the merger's job ran
    (registry.go, processJobStarting finds no failed input). The run names the tile; the good frames land."""
    farm = backend(pachd)
    farm.deploy(deploy_specs("farm-worker:1"))
    seed_splitter(pachd, JOB.name, frames=3, tiles_per_frame=2)
    pachd.jobset_script = [[
        job_info("splitter", pps_pb2.JOB_SUCCESS),
        job_info("renderer", pps_pb2.JOB_SUCCESS, data_total=6, data_processed=5, data_recovered=1),
        job_info("merger", pps_pb2.JOB_SUCCESS, data_total=1, data_processed=1),
    ]]
    bad, tile = "a" * 64, f"{JOB.name}/tiles/000003_0001.json"
    recovered = pps_pb2.DatumInfo(datum=pps_pb2.Datum(id=bad), state=pps_pb2.DatumState.RECOVERED, data=[
        pfs_pb2.FileInfo(file=pfs_pb2.File(path=f"/{JOB.name}")), pfs_pb2.FileInfo(file=pfs_pb2.File(path=f"/{tile}"))])

    def script(*_):
        job_id = pachd.commits[-1][1]
        pachd.datums[("renderer", job_id)] = [recovered]
        pachd.logs[:] = [pps_pb2.LogMessage(pipeline_name="renderer", job_id=job_id, user=True,
                                            message=f"error: tile {tile} (datum {bad}): the scene crashed Cycles\n"),
                         pps_pb2.LogMessage(pipeline_name="renderer", job_id=job_id, user=True, datum_id=bad,
                                            message=f"renderer: recovered tile {tile} (datum {bad})\n")]
        seed_frames(pachd, job_id)

    with pytest.raises(DatumsFailed, match=r"frame 3 tile 1 .*the scene crashed Cycles") as caught:
        farm.run(JOB, job_files, script, threading.Event())
    [failure] = caught.value.failures
    assert len(failure.log_lines) == 2
    got = []
    errors = farm.fetch_frames(JOB, tmp_path / "frames", lambda frame, path: got.append(frame))
    assert got == [1, 2] and errors == ["frame 3: tile 1 missing"]


def test_fetch_frames_reads_the_jobs_own_commit_not_the_branch_head(pachd, job_files, tmp_path):
    farm, ours = submitted(pachd, job_files)
    frames = seed_frames(pachd, ours)
    # A friend's job runs next on the shared cluster, and removes ours: the merger's head is its commit.
    friend = Job("friend_shot-9f8e7d6c", "friend's shot", JobSettings())
    _, theirs = submitted(pachd, job_files, friend)
    pachd.files["merger"] = {f"/{friend.name}/000001.exr": b"a friend's frame"}
    pachd.commit_files[("merger", theirs)] = dict(pachd.files["merger"])
    assert theirs != ours
    farm.fetch_frames(JOB, tmp_path, lambda frame, path: None)
    for path, data in frames.items():
        assert (tmp_path / Path(path).name).read_bytes() == data
    assert {commit for repo, commit, _ in pachd.get_file_requests if repo == "merger"} == {ours}


def test_fetch_frames_needs_the_jobs_run(pachd, tmp_path):
    seed_frames(pachd)
    with pytest.raises(FarmFailure, match="was not submitted from here"):
        backend(pachd).fetch_frames(JOB, tmp_path, lambda frame, path: None)
    assert pachd.get_file_requests == []


def test_fetch_frames_resumes_after_a_broken_stream(pachd, job_files, tmp_path):
    farm, commit_id = submitted(pachd, job_files)
    frames = seed_frames(pachd, commit_id)
    pachd.break_get_file_after = 200_000
    farm.fetch_frames(JOB, tmp_path, lambda frame, path: None)
    assert (tmp_path / "000001.exr").read_bytes() == frames[f"/{JOB.name}/000001.exr"]
    assert [offset for repo, _, offset in pachd.get_file_requests if repo == "merger"][:2] == [0, 200_000]


def test_fetch_frames_over_http_uses_ranges_and_resumes(pachd, job_files, tmp_path):
    seen: list[tuple[str, str | None, str | None]] = []
    frames: dict[str, bytes] = {}

    class FileServer(http.server.BaseHTTPRequestHandler):
        """pachd's /pfs/<project>/<repo>/<commit>/<path> file server; the first answer breaks off.

        pachd has it only from v2.8.0 (src/internal/fileserver/fileserver.go: ServeHTTP takes the token
        through src/internal/middleware/auth/httpauth/httpauth.go, ClientWithToken, from the authn-token
        header; sendFile answers 206 for a part, parseRange reads "bytes=A-B"); v2.7.0 has no /pfs/ route.
        Stand-in's own: the token is recorded, not checked; no directory listing; the first answer is cut
        short on purpose.
        """

        def do_GET(self):  # noqa: N802
            seen.append((self.path, self.headers.get("Range"), self.headers.get("authn-token")))
            data = frames["/" + self.path.split("/", 5)[5]]
            start, end = (int(v) for v in self.headers["Range"].removeprefix("bytes=").split("-"))
            body = data[start:end + 1]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:50_000] if len(seen) == 1 else body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FileServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        farm, commit_id = submitted(pachd, job_files, http_url=f"http://127.0.0.1:{server.server_port}/")
        frames.update(seed_frames(pachd, commit_id))
        farm.fetch_frames(JOB, tmp_path, lambda frame, path: None)
    finally:
        server.shutdown()
    for path, data in frames.items():
        assert (tmp_path / Path(path).name).read_bytes() == data
    size = len(frames[f"/{JOB.name}/000001.exr"])
    assert seen[0] == (f"/pfs/default/merger/{commit_id}/{JOB.name}/000001.exr", f"bytes=0-{size - 1}", TOKEN)
    assert seen[1][1] == f"bytes=50000-{size - 1}"


def test_jobs_and_clean(pachd):
    part = f"{JOB.name}.p1"  # a long job goes up in parts (job_parts); they list and clean as one job
    pachd.files["blends"] = {
        f"/{JOB.name}/scene/scene.blend": b"blend", f"/{JOB.name}/job.json": json.dumps(JOB.to_json()).encode(),
        f"/{part}/job.json": json.dumps(JOB.to_json()).encode(),
        "/other-job/scene/scene.blend": b"other", "/other-job/job.json": b"{\"display_name\": \"other\"}"}
    seed_frames(pachd)
    pachd.files["merger"][f"/{part}/000004.exr"] = b"frame 4"
    farm = backend(pachd)
    jobs = {j.name: j for j in farm.list_jobs()}
    assert set(jobs) == {JOB.name, "other-job"}
    assert (jobs[JOB.name].display_name, jobs[JOB.name].frames, jobs[JOB.name].failed_frames) == ("shot 1", 3, 1)
    assert (jobs["other-job"].frames, jobs["other-job"].failed_frames) == (1, 0)

    farm.clean(JOB.name)
    assert sorted(pachd.deletes) == sorted([f"/{JOB.name}/job.json", f"/{JOB.name}/scene/scene.blend",
                                            f"/{part}/job.json"])
    assert set(pachd.files["blends"]) == {"/other-job/scene/scene.blend", "/other-job/job.json"}
    assert [repo for repo, _, _ in pachd.commits] == ["blends"]  # one new commit, in the input repo only
    with pytest.raises(BadInput, match="no job"):
        farm.clean(JOB.name)
    with pytest.raises(BadInput, match="not safe"):
        farm.clean("../etc")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_address_is_one_clear_line():
    farm = PachydermBackend(f"grpc://127.0.0.1:{free_port()}")
    with pytest.raises(FarmFailure) as caught:
        farm.list_jobs()
    message = str(caught.value)
    assert message.startswith("cannot reach pachd at grpc://127.0.0.1:") and "\n" not in message


def test_wrong_token_is_an_auth_error(pachd):
    with pytest.raises(FarmFailure) as caught:
        PachydermBackend(pachd.address, token="wrong").deploy(deploy_specs("farm-worker:1"))
    assert "refused the token" in str(caught.value) and "FARM_PACHD_TOKEN" in str(caught.value)
    assert pachd.create_requests == []


@pytest.mark.parametrize("address", ["grpc://host:port", "ftp://host:1", "grpc://host:1/path", "://"])
def test_malformed_address_is_bad_input(address):
    with pytest.raises(BadInput, match="grpc://HOST:30650"):
        PachydermBackend(address)


def test_pachctl_config_is_used_when_no_address(pachd, tmp_path, monkeypatch):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"v2": {"active_context": "farm", "contexts": {"farm": {
        "pachd_address": pachd.address, "session_token": TOKEN}}}}), encoding="utf-8")
    monkeypatch.setenv("PACH_CONFIG", str(config))
    pachd.files["blends"] = {"/a-job/job.json": b"{}"}
    assert [j.name for j in PachydermBackend().list_jobs()] == ["a-job"]
    monkeypatch.setenv("PACH_CONFIG", str(tmp_path / "missing.json"))
    with pytest.raises(FarmFailure, match="no pachctl config"):
        PachydermBackend()


def farm_command(argv: list[str]) -> int:
    return cli.main(argv)


def test_deploy_command_applies_and_reports_errors_in_one_line(pachd, monkeypatch, capsys):
    monkeypatch.setenv("FARM_PACHD_TOKEN", TOKEN)
    assert farm_command(["deploy", "--image", "farm-worker:3", "--apply", "--pachd", pachd.address]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "created pipeline merger"
    assert pachd.pipelines["renderer"].transform.image == "farm-worker:3"

    assert farm_command(["jobs", "--pachd", f"grpc://127.0.0.1:{free_port()}"]) == 1  # the farm, not the input
    err = capsys.readouterr().err
    assert err.startswith("farm: failed: cannot reach pachd") and err.count("\n") == 1


def _carrying(folder: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def test_carried_files_are_uploaded_once_by_content_and_copied_into_each_job(pachd, job_files, tmp_path):
    said: list[str] = []
    farm = backend(pachd, log=said.append)
    farm.deploy(deploy_specs("farm-worker:1"))
    wood, frames = b"PNG wood " * 50_000, [b"PNG frame %d" % i for i in range(3)]
    _carrying(job_files, {"scene/files/aa11/wood.png": wood,
                          **{f"scene/files/bb22/seq_{i + 1:04d}.png": frame for i, frame in enumerate(frames)}})
    farm.upload(JOB, job_files)

    stored = pachd.files["blend-files"]
    assert stored == {f"/{hashlib.sha256(d).hexdigest()}": d for d in [wood, *frames]}
    blends = pachd.files["blends"]
    assert blends[f"/{JOB.name}/scene/files/aa11/wood.png"] == wood
    assert [blends[f"/{JOB.name}/scene/files/bb22/seq_{i:04d}.png"] for i in (1, 2, 3)] == frames
    assert not [path for path in pachd.chunks if path.startswith(f"/{JOB.name}/scene/files/")]  # copied, not sent
    assert {(repo, dst) for repo, _, dst in pachd.copies} == {
        ("blend-files", f"/{JOB.name}/scene/{rel}") for rel in
        ["files/aa11/wood.png", *(f"files/bb22/seq_{i:04d}.png" for i in (1, 2, 3))]}

    # Another job with the same texture, and a new version of this one whose sequence changed.
    other = Job("shot_2-0a1b2c3d", "shot 2", JobSettings())
    second = _carrying(tmp_path / "other", {"scene/scene.blend": (job_files / "scene" / "scene.blend").read_bytes(),
                                            "job.json": json.dumps(other.to_json()).encode(),
                                            "scene/files/aa11/wood.png": wood})
    sent_before = dict(pachd.chunks)
    farm.upload(other, second)
    assert pachd.files["blends"][f"/{other.name}/scene/files/aa11/wood.png"] == wood
    assert {p: c for p, c in pachd.chunks.items() if p.startswith("/") and p not in sent_before
            and not p.startswith(f"/{other.name}/")} == {}  # nothing new went to blend-files
    assert [desc for repo, _, desc in pachd.commits if repo == "blend-files"] == ["4 file(s) render jobs carry"]
    assert said == [f"blend-files on pachd: 4 of the job's 4 file content(s) are new "
                    f"({(len(wood) + sum(map(len, frames))) / 1e6:.1f} MB to upload), the rest are there already",
                    "blend-files on pachd: 0 of the job's 1 file content(s) are new (0.0 MB to upload), "
                    "the rest are there already"]

    for path in (job_files / "scene" / "files" / "bb22").iterdir():
        path.unlink()
    _carrying(job_files, {"scene/files/cc33/seq_0001.png": b"PNG new frame"})
    farm.upload(JOB, job_files)
    ours = sorted(p for p in pachd.files["blends"] if p.startswith(f"/{JOB.name}/scene/files/"))
    assert ours == [f"/{JOB.name}/scene/files/aa11/wood.png", f"/{JOB.name}/scene/files/cc33/seq_0001.png"]
    assert [desc for repo, _, desc in pachd.commits if repo == "blend-files"][-1] == "1 file(s) render jobs carry"


def test_a_gpu_scene_reports_each_renderer_pods_device_from_its_logs(pachd, job_files):
    """The splitter's ``scene.json`` says the scene asks for a GPU; then the run reads the renderer job's logs
    and says what each pod rendered on, warning of one that fell back to its CPU (lines as ``render_tile`` prints
    them; pachd tags each with its pod, ``LogMessage.worker_id``). A CPU scene costs no log read."""
    notes: list[tuple[str, str]] = []
    farm = PachydermBackend(pachd.address, token=TOKEN, poll_seconds=0.01,
                            log=lambda m: notes.append(("log", m)), warn=lambda m: notes.append(("warn", m)))
    farm.deploy(deploy_specs("farm-worker:1", gpu=True))
    seed_splitter(pachd, JOB.name, frames=1, tiles_per_frame=2)
    ok = pps_pb2.JOB_SUCCESS
    done = [job_info("splitter", ok), job_info("renderer", ok, data_total=2, data_processed=2),
            job_info("merger", ok, data_total=1, data_processed=1)]
    pachd.jobset_script = [done]
    farm.run(JOB, job_files, lambda progress: None, threading.Event())
    assert notes == [] and pachd.logs_requests == []  # no scene.json: not a GPU scene

    pachd.files["splitter"][f"/{JOB.name}/scene.json"] = b'{"gpu": true}'
    pachd.jobset_script = [done]

    def script_logs(*_):  # the job id is only known once the upload commit exists
        job_id = pachd.commits[-1][1]
        pachd.logs[:] = [
            pps_pb2.LogMessage(pipeline_name="renderer", job_id=job_id, user=True, worker_id="renderer-v1-abcde",
                               message="renderer: device: OPTIX NVIDIA GeForce RTX 4070\n"),
            pps_pb2.LogMessage(pipeline_name="renderer", job_id=job_id, user=True, worker_id="renderer-v1-fghij",
                               message="renderer: device: CPU (Cycles found no OPTIX or CUDA or HIP or ONEAPI or METAL "
                                       "device here)\n"),
            pps_pb2.LogMessage(pipeline_name="renderer", job_id=job_id, user=True, worker_id="renderer-v1-fghij",
                               message="warning: the scene asks for GPU rendering, but Cycles found no OPTIX or "
                                       "CUDA or HIP or ONEAPI or METAL device here: rendering on the CPU\n"),
            pps_pb2.LogMessage(pipeline_name="renderer", job_id=job_id, user=True, worker_id="renderer-v1-abcde",
                               message="renderer: shot-1 frame 1 piece 0000 done\n"),
        ]

    farm.run(JOB, job_files, script_logs, threading.Event())
    assert notes == [
        ("log", "renderer worker renderer-v1-abcde: renders on OPTIX NVIDIA GeForce RTX 4070"),
        ("warn", "renderer worker renderer-v1-fghij: the scene asks for GPU rendering, but Cycles found no OPTIX "
                 "or CUDA or HIP or ONEAPI or METAL device here: rendering on the CPU")]


def test_a_long_job_goes_up_in_parts_and_each_parts_frames_land_before_the_next_is_followed(pachd, job_files):
    """Frames 1-4 of 40 tiles each, with sets of at least two tiles on 4 pods x 4 sets (32 tiles): the grid's
    parts of 1, 2 and 1 frames (job_parts), each its own commit, so its frames are readable once its merger job
    is done."""
    farm = backend(pachd)
    farm.deploy(deploy_specs("farm-worker:1"))
    parts = [f"{JOB.name}.p{i}" for i in (0, 1, 2)]
    for name, frames in zip(parts, ([1], [2, 3], [4]), strict=True):
        for frame in frames:
            pachd.files.setdefault("merger", {})[f"/{name}/{frame:06d}.png"] = bytes([frame]) * 100
    pachd.jobset_script = [[job_info(name, pps_pb2.JOB_SUCCESS) for name in PIPELINES]]
    delivered = []

    def on_frame(frame: int, path: Path) -> None:
        delivered.append((frame, path.read_bytes(), list(dict.fromkeys(pachd.jobset_calls))))

    farm.run(JOB, job_files, lambda progress: None, threading.Event(), on_frame, FramePlan([1, 2, 3, 4], 1, 40))

    ids = [commit for repo, commit, _ in pachd.commits if repo == "blends"]
    assert len(ids) == 3
    ranges = [json.loads(pachd.files["blends"][f"/{name}/job.json"])["settings"]["frames"] for name in parts]
    assert [(r["start"], r["end"]) for r in ranges] == [(1, 1), (2, 3), (4, 4)]
    blob = (job_files / "scene" / "scene.blend").read_bytes()
    assert all(pachd.files["blends"][f"/{name}/scene/scene.blend"] == blob for name in parts)
    assert [path for path in pachd.chunks if path.endswith("scene.blend")] == [f"/{parts[0]}/scene/scene.blend"]
    assert [(src, dst) for _, src, dst in pachd.copies] == [(f"/{parts[0]}/scene/scene.blend",
                                                          f"/{name}/scene/scene.blend")
                                                         for name in parts[1:]]  # copied server-side
    assert [(frame, data) for frame, data, _ in delivered] == [(n, bytes([n]) * 100) for n in (1, 2, 3, 4)]
    # each part's frames were handed over before the next part's job set was followed
    assert [seen for _, _, seen in delivered] == [ids[:1], ids[:2], ids[:2], ids]


def test_a_cancelled_job_drops_the_parts_it_did_not_reach_newest_first(pachd, job_files):
    """commit_set.go, dropCommitSet, refuses a commit with children: the later parts go newest first."""
    farm = backend(pachd)
    farm.deploy(deploy_specs("farm-worker:1"))
    pachd.jobset_script = [[job_info("splitter", pps_pb2.JOB_RUNNING)]]
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(FarmFailure, match="cancelled"):
        farm.run(JOB, job_files, lambda progress: None, cancel, lambda frame, path: None,
                 FramePlan([1, 2, 3, 4], 1, 40))
    ids = [commit for repo, commit, _ in pachd.commits if repo == "blends"]
    assert len(ids) == 3 and pachd.dropped == [ids[2], ids[1]]
    assert pachd.stopped  # the part it was following had its running job stopped


def test_a_part_that_fails_delivers_nothing_of_an_older_run_and_the_rest_are_dropped(pachd, job_files, tmp_path):
    """The second part's splitter fails, so its merger job is unrunnable: pachd reads that job's output commit
    as its parent's (v2.7.0 driver_file.go, getFileSet, for a commit with an error), here an older run's frames
    of the same part. Only parts whose merger job succeeded are fetched; the third part is dropped."""
    farm = backend(pachd)
    farm.deploy(deploy_specs("farm-worker:1"))
    old = {f"/{JOB.name}.p{cell}/{frame:06d}.png": b"an older scene's frame" for cell, frame in ((1, 2), (1, 3))}
    pachd.files["merger"] = {f"/{JOB.name}.p0/000001.png": b"frame 1 of this run", **old}
    ok, failed, unrunnable = pps_pb2.JOB_SUCCESS, pps_pb2.JOB_FAILURE, pps_pb2.JOB_UNRUNNABLE
    pachd.jobset_script = [[job_info(name, ok) for name in PIPELINES],
                           [job_info("splitter", failed, reason="the scene could not be opened"),
                            job_info("renderer", unrunnable), job_info(MERGER, unrunnable)]]
    delivered: list[int] = []
    with pytest.raises(FarmFailure):
        farm.run(JOB, job_files, lambda progress: None, threading.Event(), lambda frame, path: delivered.append(frame),
                 FramePlan([1, 2, 3, 4], 1, 40))
    ids = [commit for repo, commit, _ in pachd.commits if repo == "blends"]
    assert delivered == [1] and pachd.dropped == [ids[2]]
    got: list[int] = []
    assert farm.fetch_frames(JOB, tmp_path / "out", lambda frame, path: got.append(frame), frozenset()) == []
    assert got == [1] and [p.name for p in (tmp_path / "out").iterdir()] == ["000001.png"]


def test_a_lost_tile_costs_its_frame_not_the_later_parts(pachd, job_files):
    """A tile RECOVERED by err_cmd leaves its part's merger job successful: the part's frames land, the
    later parts are followed and land too, and the run then names the tile (pachd runs a RECOVERED datum
    again in each later job, v2.7.0 pending_job.go, createSerialDatums, so every part names it)."""
    farm = backend(pachd)
    farm.deploy(deploy_specs("farm-worker:1"))
    pachd.files["merger"] = {f"/{JOB.name}.p{cell}/{frame:06d}.png": bytes([frame]) for cell, frame in
                             ((0, 1), (1, 2), (1, 3), (2, 4))}
    pachd.jobset_script = [[job_info("splitter", pps_pb2.JOB_SUCCESS),
                            job_info("renderer", pps_pb2.JOB_SUCCESS, data_total=40, data_processed=39,
                                     data_recovered=1),
                            job_info(MERGER, pps_pb2.JOB_SUCCESS)]]
    bad, tile = "b" * 64, f"{JOB.name}.p0/tiles/000001_0007.json"
    recovered = pps_pb2.DatumInfo(datum=pps_pb2.Datum(id=bad), state=pps_pb2.DatumState.RECOVERED, data=[
        pfs_pb2.FileInfo(file=pfs_pb2.File(path=f"/{JOB.name}.p0/scene")),
        pfs_pb2.FileInfo(file=pfs_pb2.File(path=f"/{tile}"))])

    def script(*_):
        for repo, commit, _ in pachd.commits:
            if repo == "blends":
                pachd.datums[("renderer", commit)] = [recovered]

    delivered: list[int] = []
    with pytest.raises(DatumsFailed, match="frame 1 tile 7"):
        farm.run(JOB, job_files, script, threading.Event(), lambda frame, path: delivered.append(frame),
                 FramePlan([1, 2, 3, 4], 1, 40))
    assert delivered == [1, 2, 3, 4] and pachd.dropped == []
