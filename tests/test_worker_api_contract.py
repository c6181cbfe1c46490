"""CONTRACT TEST of the transforms' NextDatum client against python-pachyderm's generated Worker API.

``farm_pipelines.worker_api`` encodes NextDatum's two messages itself, on both ends:
the transforms' client and the local farm's server
(``farm_pipelines.local.worker_api_server``). Here they meet python-pachyderm's
generated message classes, its generated ``WorkerServicer`` in an in-process gRPC
server, and its generated ``WorkerStub`` calling the local farm's server. Neither
server is pachd's worker binary: they check the wire format and the batching loop's
protocol (errors reported on the next call, the environment applied per datum), not
how pachd lays out a datum.
"""

from __future__ import annotations

import os
from concurrent import futures

import grpc
import pytest
from google.protobuf import empty_pb2
from python_pachyderm.proto.v2.worker import worker_pb2, worker_pb2_grpc

from farm_pipelines.errors import BadInput
from farm_pipelines.local.worker_api_server import serve_worker_api
from farm_pipelines.worker_api import decode_request, decode_response, encode_request, encode_response, run_batched

ENTRIES = ["PACH_DATUM_ID=0123abcd", "splitter=/pfs/splitter/shot 1/tiles/000003_0007.json",
           "FARM_NOTE=a=b=c", "SCÈNE=Ünïcode 🎬", "EMPTY=", "LONG=" + "x" * 300]


@pytest.mark.parametrize("error", ["", "frame 3 tile 7: Blender wrote no readable image", "ошибка 🎬" * 40])
def test_request_reads_back_with_the_generated_message(error):
    assert worker_pb2.NextDatumRequest.FromString(encode_request(error)).error == error


def test_response_from_the_generated_message_decodes_entry_for_entry():
    wire = worker_pb2.NextDatumResponse(env=ENTRIES).SerializeToString()
    assert decode_response(wire) == ENTRIES
    assert decode_response(worker_pb2.NextDatumResponse().SerializeToString()) == []


@pytest.mark.parametrize("error", ["", "frame 3 tile 7: Blender wrote no readable image", "ошибка 🎬" * 40])
def test_server_reads_the_generated_request(error):
    assert decode_request(worker_pb2.NextDatumRequest(error=error).SerializeToString()) == error


def test_server_response_reads_back_with_the_generated_message():
    assert list(worker_pb2.NextDatumResponse.FromString(encode_response(ENTRIES)).env) == ENTRIES
    assert encode_response([]) == worker_pb2.NextDatumResponse().SerializeToString()


def test_local_farm_server_answers_the_generated_stub():
    """The generated client calls the farm's server: requests arrive, environments return, the end is CANCELLED."""
    errors: list[str] = []
    datums = [ENTRIES, ["PACH_DATUM_ID=two"]]

    def next_datum(error: str) -> list[str] | None:
        errors.append(error)
        return datums[len(errors) - 1] if len(errors) <= len(datums) else None

    server, port = serve_worker_api(next_datum)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = worker_pb2_grpc.WorkerStub(channel)
            assert list(stub.NextDatum(worker_pb2.NextDatumRequest()).env) == ENTRIES
            assert list(stub.NextDatum(worker_pb2.NextDatumRequest(error="tile 7 is broken")).env) == datums[1]
            with pytest.raises(grpc.RpcError) as ended:
                stub.NextDatum(worker_pb2.NextDatumRequest())
            with pytest.raises(grpc.RpcError) as unknown:  # the generated servicer's answer to an unserved method
                stub.Status(empty_pb2.Empty())
    finally:
        server.stop(None)
    assert ended.value.code() == grpc.StatusCode.CANCELLED
    assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert errors == ["", "tile 7 is broken", ""]


def test_fields_a_newer_pachd_adds_are_skipped():
    known = worker_pb2.NextDatumResponse(env=ENTRIES[:2]).SerializeToString()
    unknown = bytes([2 << 3 | 0, 0x96, 0x01]) + bytes([3 << 3 | 2, 3]) + b"abc" + bytes([4 << 3 | 5]) + b"\0" * 4
    assert decode_response(unknown + known) == ENTRIES[:2]
    with pytest.raises(ValueError):
        decode_response(known[:-3])


class ScriptedWorker(worker_pb2_grpc.WorkerServicer):
    """Hands out the given environments, records each call's error, then ends as the farm does."""

    def __init__(self, datums: list[list[str]]) -> None:
        self.datums = list(datums)
        self.errors: list[str] = []

    def NextDatum(self, request, context):  # noqa: N802 (gRPC method name)
        self.errors.append(request.error)
        if not self.datums:
            context.abort(grpc.StatusCode.CANCELLED, "no more datums")
        return worker_pb2.NextDatumResponse(env=self.datums.pop(0))


def test_batching_loop_applies_each_environment_and_reports_errors_on_the_next_call(monkeypatch):
    scripted = ScriptedWorker([["PACH_DATUM_ID=one", "FARM_NOTE=a=b"], ["PACH_DATUM_ID=two", "FARM_NOTE=a=b"],
                               ["PACH_DATUM_ID=one", "FARM_NOTE=c"]])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    worker_pb2_grpc.add_WorkerServicer_to_server(scripted, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("PPS_WORKER_GRPC_PORT", str(port))
    seen = []

    def process() -> None:
        seen.append((os.environ["PACH_DATUM_ID"], os.environ["FARM_NOTE"]))
        if len(seen) == 1:
            raise BadInput("tile 7 is broken")
        if len(seen) == 2:
            raise KeyError("frame")

    try:
        with pytest.raises(grpc.RpcError) as ended:
            run_batched(process)
    finally:
        server.stop(None)
    assert ended.value.code() == grpc.StatusCode.CANCELLED
    assert seen == [("one", "a=b"), ("two", "a=b"), ("one", "c")]
    assert scripted.errors == ["", "tile 7 is broken", "KeyError('frame')", ""]


def test_an_input_the_next_datum_lacks_is_unset(monkeypatch):
    """A mixed cluster's merger joins with outer_join: a datum can lack an input the one before had, and
    pachd then sets no variable for it, so the loop must not leave the old one behind."""
    scripted = ScriptedWorker([["blends=/pfs/blends", "renderer_gpu=/pfs/renderer_gpu"], ["blends=/pfs/blends"]])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    worker_pb2_grpc.add_WorkerServicer_to_server(scripted, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("PPS_WORKER_GRPC_PORT", str(port))
    monkeypatch.delenv("renderer_gpu", raising=False)
    seen = []
    try:
        with pytest.raises(grpc.RpcError):
            run_batched(lambda: seen.append(os.environ.get("renderer_gpu")))
    finally:
        server.stop(None)
        os.environ.pop("blends", None)
    assert seen == ["/pfs/renderer_gpu", None]
