"""The pachd side of the Worker API, in process: answers a local worker's ``NextDatum`` calls.

In a pipeline pod, pachd's worker binary serves ``NextDatum`` to the user code on
a loopback port (``PPS_WORKER_GRPC_PORT``). The local farm does the same for each
of its worker processes. The call's two messages are one string field each, so
this server uses ``worker_api``'s own codec through a generic gRPC handler: the
local farm never imports python-pachyderm, whose import alone costs a quarter of a
second of CPU. ``tests/test_worker_api_contract.py`` calls this server with
python-pachyderm's generated stub and messages, so both ends keep Pachyderm's wire
format.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures

import grpc

from farm_pipelines.worker_api import NEXT_DATUM, decode_request, encode_response


def serve_worker_api(next_datum: Callable[[str], list[str] | None]) -> tuple[grpc.Server, int]:
    """Start a loopback Worker API; ``next_datum(error)`` finishes the last datum and blocks for the next.

    It returns the next datum's ``KEY=VALUE`` environment, or None when there is none;
    then the call fails with ``CANCELLED``, and the farm stops the process, as pachd would.
    Returns the started server and its port.
    """
    def answer(error: str, context: grpc.ServicerContext) -> list[str]:
        env = next_datum(error)
        if env is None:
            context.abort(grpc.StatusCode.CANCELLED, "no more datums")
        return env

    service, method = NEXT_DATUM.strip("/").split("/")
    handler = grpc.unary_unary_rpc_method_handler(answer, request_deserializer=decode_request,
                                                  response_serializer=encode_response)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port
