"""gRPC faults a client can cause (issue 10), through a raw HTTP/2 client: a declared size above the limit is
refused from the length prefix before the body is buffered, an undecodable or truncated message is
INVALID_ARGUMENT with a request line and no traceback, and SIGTERM lets a call being received finish."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.e2e.grpc_raw import RawCall
from tests.e2e.server import ServerProcess
from tests.paths import testdata
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

HALF_PLUS_TWO = testdata("saved_model_half_plus_two_cpu")
LIMIT = 8 * 1024 * 1024
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    args = ["--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", f"--max_request_bytes={LIMIT}",
            "--request_read_timeout_seconds=2"]
    with ServerProcess(args) as running:
        yield running


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def predict_bytes(rows: int = 1) -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((rows, 1), np.float32)))
    data: bytes = request.SerializeToString()
    return data


def test_declared_size_above_the_limit_is_refused_before_the_body(server: ServerProcess) -> None:
    # Issue 10: the limit was checked after grpclib had buffered the whole declared length.
    assert server.proc is not None
    before = rss_bytes(server.proc.pid)
    call = RawCall(server.grpc_port)
    try:
        call.send_message(b"\0" * 60_000, declared=100_000_000, end=False)
        status, message = call.status()  # before the fix: no answer until the socket times out
    finally:
        call.close()
    assert status == 8  # RESOURCE_EXHAUSTED
    assert "larger than the limit" in message
    assert rss_bytes(server.proc.pid) - before < 10 * 1024 * 1024


@pytest.mark.parametrize(
    ("body", "declared"),
    [(b"\xff\xff\xff\xff\xff", None), (b"\x0a\x05abc", None), (predict_bytes()[:10], 40)],
    ids=["garbage", "truncated-field", "short-body"],
)
def test_malformed_message_is_invalid_argument(server: ServerProcess, body: bytes, declared: int | None) -> None:
    # Issue 10: undecodable messages answered UNKNOWN with a traceback on stderr and no request line.
    lines_before = len(server.lines)
    mark = server.mark()
    call = RawCall(server.grpc_port)
    try:
        call.send_message(body, declared=declared)
        status, _ = call.status()
    finally:
        call.close()
    assert status == 3  # INVALID_ARGUMENT
    wait_until(lambda: any(e["status"] == "INVALID_ARGUMENT" for e in server.events("request_finished", mark)))
    new = "\n".join(server.lines[lines_before:])
    assert "Traceback" not in new


@pytest.mark.parametrize("sent", [0, 5], ids=["headers-only", "part-of-the-message"])
def test_stalled_message_is_deadline_exceeded(server: ServerProcess, sent: int) -> None:
    # Issue 10: 40 unfinished gRPC messages held for 20 s were all still open (also a call whose HEADERS
    # came and no DATA at all).
    body = predict_bytes()
    call = RawCall(server.grpc_port)
    try:
        if sent:
            call.send_message(body[:sent], declared=len(body), end=False)
        status, message = call.status()
    finally:
        call.close()
    assert status == 4  # DEADLINE_EXCEEDED
    assert "not received within 2 s" in message


def test_sigterm_lets_a_call_being_received_finish(tmp_path: Path) -> None:
    # Issue 10: a call still being received when SIGTERM arrived was refused "Server is shutting down".
    server = ServerProcess(["--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", "--drain_delay_seconds=0"])
    with server:
        body = predict_bytes(rows=1000)
        call = RawCall(server.grpc_port)  # the slow call: headers and half its message
        try:
            call.send_message(body[: len(body) // 2], declared=len(body), end=False)
            # a quick call on the same connection, after it: once it is answered, the server has seen the
            # slow call's headers (frames of one connection are handled in order)
            quick = call.open()
            call.send_message(predict_bytes(), stream=quick)
            assert call.status(quick) == (0, "")
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            server.wait_for_line("drain_started")
            call.send(body[len(body) // 2 :], end=True)
            status, message = call.status()
        finally:
            call.close()
        assert (status, message) == (0, "")
        assert server.proc.wait(60) == 0


def _until_closed(sock: socket.socket) -> None:
    while sock.recv(65536):  # the server's SETTINGS, then the end
        pass


@pytest.mark.parametrize(
    "sent", [b"", b"PRI * HTTP/2.0\r\n", PREFACE + b"\0\0\0\4"], ids=["nothing", "half-preface", "half-settings"]
)
def test_connection_that_never_finishes_its_handshake_is_closed(server: ServerProcess, sent: bytes) -> None:
    # Issue 10: a connection that sent nothing (or part of the HTTP/2 preface) was held for ever. gRPC core
    # closes it after its 120 s handshake timeout; here after --request_read_timeout_seconds (2 s), while
    # the official client is served on another connection.
    mark = server.mark()
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=30) as idle:
        idle.sendall(sent)
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(predict_pb2.PredictRequest.FromString(predict_bytes()), timeout=30)
            assert list(response.outputs["y"].float_val) == [2.5]
        _until_closed(idle)
    event = wait_until(lambda: server.events("connection_timed_out", mark))[0]
    assert event["phase"] == "handshake"


def test_started_frame_that_never_ends_closes_the_connection(server: ServerProcess) -> None:
    # Issue 10: a frame header promising a HEADERS frame whose block never came held the connection.
    mark = server.mark()
    call = RawCall(server.grpc_port)
    try:
        call.sock.sendall(b"\0\0\x40\x01\x04\0\0\0\x03" + b"\x82")  # 64 bytes announced, 1 sent
        _until_closed(call.sock)
    finally:
        call.close()
    event = wait_until(lambda: server.events("connection_timed_out", mark))[0]
    assert event["phase"] == "frame"


def test_concurrent_streams_are_capped_at_1000_by_default(server: ServerProcess) -> None:
    # Issue 10: no cap of ours (h2's 100, enforced as a connection error that failed every call on it).
    call = RawCall(server.grpc_port)
    try:
        call.send_message(predict_bytes())
        assert call.status() == (0, "")
        assert call.conn.remote_settings.max_concurrent_streams == 1000
    finally:
        call.close()


def test_a_stream_beyond_the_cap_is_refused_alone() -> None:
    # Issue 10: per-connection stream caps. A client that opens more streams than advertised gets
    # REFUSED_STREAM for the extra one; the calls already open and the connection carry on. The official
    # client queues calls above the cap instead of opening them.
    args = ["--model_name=m", f"--model_base_path={HALF_PLUS_TWO}",
            "--grpc_channel_arguments=grpc.max_concurrent_streams=2"]
    with ServerProcess(args, rest=False) as server:
        call = RawCall(server.grpc_port)
        try:
            call.receive_settings()
            assert call.conn.remote_settings.max_concurrent_streams == 2
            call.conn.remote_settings.max_concurrent_streams = 100  # a client that ignores the cap
            call.conn.remote_settings.acknowledge()
            second = call.open()
            third = call.open()
            for stream in (call.stream, second):
                call.send_message(predict_bytes(), stream=stream)
            assert call.status(third) == (-1, "")
            assert call.reset[third] == 7  # REFUSED_STREAM
            assert call.status() == (0, "")
            assert call.status(second) == (0, "")
            fourth = call.open()  # two closed: room again, on the same connection
            call.send_message(predict_bytes(), stream=fourth)
            assert call.status(fourth) == (0, "")
        finally:
            call.close()
        wait_until(lambda: server.events("stream_refused"))
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest.FromString(predict_bytes())
            stub.Predict(request, timeout=30)  # connected: the client has the server's SETTINGS
            futures = [stub.Predict.future(request, timeout=30) for _ in range(10)]
            assert [list(f.result().outputs["y"].float_val) for f in futures] == [[2.5]] * 10
