"""Wire details and client faults where aspired differed from TF Serving (issue 10): the shared port, the
metadata path's case, CORS preflight bodies, zero-element tensors with huge dimensions."""

from __future__ import annotations

import select
import socket
import sys
from collections.abc import Iterator

import grpc
import httpx
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.e2e.launch import LISTENERS_VARIABLE
from tests.e2e.server import ServerProcess
from tests.paths import testdata
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

HALF_PLUS_TWO = testdata("saved_model_half_plus_two_cpu")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    args = ["--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", "--request_read_timeout_seconds=2"]
    with ServerProcess(args) as running:
        yield running


def test_second_server_on_the_same_port_starts(server: ServerProcess) -> None:
    # Issue 10: TF Serving's gRPC listener sets SO_REUSEPORT, so a second server on the same --port starts;
    # aspired exited 255.
    # The second server binds --port itself (the plain command line, not the harness's pre-bound sockets).
    second = ServerProcess(["--model_name=m", f"--model_base_path={HALF_PLUS_TWO}"], rest=False)
    for sock in second._sockets:
        sock.close()
    second._sockets = []
    second.env.pop(LISTENERS_VARIABLE, None)
    second.args = [sys.executable, "-m", "svc", f"--port={server.grpc_port}", "--model_name=m",
                   f"--model_base_path={HALF_PLUS_TWO}"]
    second.grpc_port = server.grpc_port
    with second, grpc.insecure_channel(second.grpc_target) as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m"
        request.inputs["x"].CopyFrom(_tensor([1, 1], [1.0]))
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        assert response.outputs["y"].float_val == [2.5]


def test_metadata_in_another_case_answers_the_status(server: ServerProcess) -> None:
    # Issue 10: TF Serving matches the path case-insensitively and serves metadata only for `metadata`.
    status = httpx.get(f"{server.rest_url}/v1/models/m", timeout=30)
    other = httpx.get(f"{server.rest_url}/v1/models/m/METADATA", timeout=30)
    assert other.status_code == 200
    assert other.json() == status.json()
    assert "metadata" in httpx.get(f"{server.rest_url}/v1/models/m/metadata", timeout=30).json()


def test_cors_preflight_without_origin_has_an_empty_body(server: ServerProcess) -> None:
    # Issue 10: TF Serving answers 400 with no body; aspired sent a JSON error.
    r = httpx.options(f"{server.rest_url}/v1/models/m:predict", timeout=30)
    assert r.status_code == 400
    assert r.content == b""
    ok = httpx.options(f"{server.rest_url}/v1/models/m:predict", headers={"Origin": "http://a.example"}, timeout=30)
    assert ok.status_code == 200


def _tensor(dims: list[int], values: list[float]) -> tensor_pb2.TensorProto:
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for size in dims:
        tensor.tensor_shape.dim.add().size = size
    tensor.float_val.extend(values)
    return tensor


def test_zero_elements_with_huge_dimensions_is_invalid_argument(server: ServerProcess) -> None:
    # Issue 10: [0, 2^31, 2^40] made numpy raise inside the converter: INTERNAL instead of INVALID_ARGUMENT.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(_tensor([0, 2**31, 2**40], []))
    with grpc.insecure_channel(server.grpc_target) as channel, pytest.raises(grpc.RpcError) as info:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not [e for e in server.log_events() if e.get("event") == "request_crashed"]


def _raw_http(port: int, head: bytes, body: bytes, *, close_after: bool) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body)
        if close_after:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
        return b"".join(chunks)


def test_slow_body_is_answered_408(server: ServerProcess) -> None:
    # Issue 10: partially sent requests were never timed out (and then held the drain).
    head = (b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n")
    answer = _raw_http(server.rest_port, head, b'{"instances"', close_after=False)
    assert answer.startswith(b"HTTP/1.1 408")


def test_client_that_stops_mid_body_is_cancelled_not_500(server: ServerProcess) -> None:
    # Issue 10: a short body for its Content-Length was answered 500 with an error-level traceback.
    before = len(server.lines)
    mark = server.mark()
    head = (b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n")
    _raw_http(server.rest_port, head, b'{"instances"', close_after=True)
    event = wait_until(lambda: next(
        (e for e in server.events("request_finished", mark) if e["status"] == "CANCELLED"), None
    ))
    assert event["level"] == "info"
    new = "\n".join(server.lines[before:])
    assert "Traceback" not in new
    assert "INTERNAL" not in new


def _until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "started",
    [b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x2a"],
    ids=["http1-head", "h2c-frame"],
)
def test_slow_request_head_is_cut_off_while_others_are_served(server: ServerProcess, started: bytes) -> None:
    # Issue 10: a started request head was held until hypercorn's 75 s keep-alive timeout. Now it has
    # --request_read_timeout_seconds (2 s here; the socket's 30 s would expire first without the bound).
    mark = server.mark()
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as slow:
        slow.sendall(started)
        served = httpx.get(f"{server.rest_url}/v1/models/m", timeout=30)  # another connection meanwhile
        assert served.status_code == 200
        answer = _until_closed(slow)
    if started.startswith(b"POST"):
        assert answer.startswith(b"HTTP/1.1 408")
        assert b"Request headers not received within 2 s" in answer
    wait_until(lambda: server.events("request_head_timed_out", mark))


def test_request_head_sent_a_byte_at_a_time_is_cut_off(server: ServerProcess) -> None:
    # Issue 10: the bound runs from the head's first byte; bytes that keep trickling in do not extend it.
    head = b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: 0\r\n" * 300
    answer = b""
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as slow:
        for byte in head:
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            ready, _, _ = select.select([slow], [], [], 0.01)  # a slow client's pace
            if ready:
                answer = _until_closed(slow)
                break
    assert answer.startswith(b"HTTP/1.1 408")
