"""A transform's side of Pachyderm's Worker API: the datum batching loop.

A batched transform makes one call, ``NextDatum``, once per datum: thousands of
times per job. python-pachyderm's stub would do, but importing python-pachyderm
loads every Pachyderm API (0.25 s of CPU in each worker process) and its
pure-Python protobuf costs about 0.3 ms per call, which a 16 px tile notices. The
call's two messages are one string field each, so this module encodes them
itself and calls ``/pachyderm.worker.Worker/NextDatum`` over grpc. The local farm's
server (``farm_pipelines.local.worker_api_server``) uses the same codec for the
other end. ``tests/test_worker_api_contract.py`` checks all four directions against
python-pachyderm's generated messages, stub and servicer.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import grpc

from farm_pipelines.errors import BadInput, FarmFailure

NEXT_DATUM = "/pachyderm.worker.Worker/NextDatum"


def run_batched(process_datum: Callable[[], None]) -> None:
    """Call ``process_datum`` once per datum, forever; the worker stops this process when done.

    This is python-pachyderm's ``batch_datum`` loop, except that each datum's
    environment comes from the ``NextDatum`` response (pachd fills it) rather than
    from re-reading ``/pfs/.env``: python-dotenv copies the whole environment on
    every call, which costs more than a small tile. An exception fails only the
    current datum; it is reported on the next call, and the worker retries it.
    """
    port = os.environ.get("PPS_WORKER_GRPC_PORT")
    if not port:
        raise FarmFailure("PPS_WORKER_GRPC_PORT is not set: a transform runs inside a pipeline worker")
    channel = grpc.insecure_channel(f"localhost:{port}")
    next_datum = channel.unary_unary(NEXT_DATUM, request_serializer=encode_request,
                                     response_deserializer=decode_response)
    error = ""
    current: dict[str, str] = {}  # what this loop set; most entries stay the same from datum to datum
    while True:
        given = dict(entry.split("=", 1) for entry in next_datum(error))
        for name in [name for name in current if name not in given]:
            # An input the previous datum had and this one lacks (an outer join) must not linger.
            del current[name]
            os.environ.pop(name, None)
        for name, value in given.items():
            if current.get(name) != value:  # setting os.environ costs an encode and a putenv
                os.environ[name] = current[name] = value
        try:
            process_datum()
            error = ""
        except Exception as failure:  # any failure belongs to this datum alone
            # Our own failures are sentences already; anything else keeps its type for the log.
            error = str(failure) if isinstance(failure, (BadInput, FarmFailure)) else repr(failure)
            print(f"error: {error}", flush=True)


def encode_request(error: str) -> bytes:
    """``NextDatumRequest{error}``: field 1, a string; proto3 leaves an empty one out."""
    return _field(1, error.encode("utf-8")) if error else b""


def decode_response(data: bytes) -> list[str]:
    """``NextDatumResponse.env``: every field 1 (repeated string); fields it does not know are skipped."""
    return _strings_of_field_1(data, "NextDatumResponse")


def decode_request(data: bytes) -> str:
    """``NextDatumRequest.error`` (the server's side): field 1; proto3 keeps the last one sent."""
    errors = _strings_of_field_1(data, "NextDatumRequest")
    return errors[-1] if errors else ""


def encode_response(env: list[str]) -> bytes:
    """``NextDatumResponse{env}`` (the server's side): one field 1 per ``KEY=VALUE`` entry."""
    return b"".join(_field(1, entry.encode("utf-8")) for entry in env)


def _strings_of_field_1(data: bytes, message: str) -> list[str]:
    values: list[str] = []
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, at = _varint(data, at)
        elif wire_type == 1:
            at += 8
        elif wire_type == 5:
            at += 4
        elif wire_type == 2:
            length, at = _varint(data, at)
            if number == 1:
                values.append(data[at:at + length].decode("utf-8"))
            at += length
        else:
            raise ValueError(f"{message}: unsupported wire type {wire_type}")
    if at != len(data):
        raise ValueError(f"{message}: truncated message")
    return values


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("NextDatumResponse: truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
