"""The boundary to Pachyderm: the only module that imports ``python_pachyderm``.

Pipeline side: ``run_batched`` drives a transform with python-pachyderm's datum
batching helper. Local-farm side: ``serve_worker_api`` answers that helper's
``NextDatum`` calls, as pachd's worker binary does in a pipeline pod.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures

import grpc
import python_pachyderm
from python_pachyderm.proto.v2.worker import worker_pb2, worker_pb2_grpc

from farm_pipelines import pfs


def run_batched(process_datum: Callable[[], None]) -> None:
    """Call ``process_datum`` once per datum, forever; the worker stops this process when done.

    An exception fails only the current datum: the helper reports it through
    ``NextDatum`` and moves on. The dotenv path follows ``FARM_PFS`` so the same
    code reads ``/pfs/.env`` in a pod and the local farm's root elsewhere.
    """
    worker = python_pachyderm.Client().worker
    worker._dotenv_path = str(pfs.pfs_root() / ".env")
    while True:
        with worker.batch_datum():
            process_datum()


class _WorkerApi(worker_pb2_grpc.WorkerServicer):
    def __init__(self, next_datum: Callable[[str], list[str] | None]) -> None:
        self._next_datum = next_datum

    def NextDatum(self, request, context):  # noqa: N802 (gRPC method name)
        env = self._next_datum(request.error)
        if env is None:  # no more datums: the farm stops this process, as pachd would
            context.abort(grpc.StatusCode.CANCELLED, "no more datums")
        return worker_pb2.NextDatumResponse(env=env)


def serve_worker_api(next_datum: Callable[[str], list[str] | None]) -> tuple[grpc.Server, int]:
    """Start a loopback Worker API; ``next_datum(error)`` finishes the last datum and blocks for the next.

    It returns the next datum's ``KEY=VALUE`` environment, or None when there is none.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    worker_pb2_grpc.add_WorkerServicer_to_server(_WorkerApi(next_datum), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port
