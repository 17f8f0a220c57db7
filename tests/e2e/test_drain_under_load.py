"""SIGTERM under gRPC + REST load with large requests in flight, `--drain_delay_seconds=0` (issue 10's
done-when: it fails 0 of them).

The official gRPC client and httpx send ~3 MB predict requests in closed loops while two more calls are held
half-sent (proven received by the server before the signal); SIGTERM comes while all of them run. Every call
is then classified by the server's own `request_finished` line (found by its request id):
- admitted (it passed the drain gate): must have succeeded at the client, and be OK in the log;
- refused by the gate after the signal (`UNAVAILABLE Server is shutting down`): must have failed;
- never seen by the server (no line: the listener had closed): must have failed to connect.
The two half-sent calls must succeed once they are finished after the signal.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.e2e.grpc_raw import RawCall
from tests.e2e.server import ServerProcess
from tests.paths import testdata

pytestmark = pytest.mark.e2e

HALF_PLUS_TWO = testdata("saved_model_half_plus_two_cpu")
ROWS = 750_000  # ~3 MB of float32 on gRPC, ~3.7 MB of JSON on REST
WORKERS = 2  # of each protocol
SHUTTING_DOWN = "Server is shutting down"


@dataclass(frozen=True)
class Outcome:
    protocol: str
    request_id: str
    ok: bool
    error: str = ""


def grpc_request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((ROWS, 1), np.float32)))
    return request


REST_BODY = ('{"instances": [' + ", ".join(["1.0"] * ROWS) + "]}").encode()


def _grpc_worker(target: str, index: int, record: Callable[[Outcome], None], ready: threading.Event) -> None:
    request = grpc_request()
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(target, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for n in range(10_000):
            request_id = f"grpc-{index}-{n}"
            try:
                response = stub.Predict(request, timeout=60, metadata=[("x-request-id", request_id)])
            except grpc.RpcError as exc:
                record(Outcome("grpc", request_id, False, f"{exc.code().name}: {exc.details()}"))
                return  # the first failure ends the loop (the server is going away)
            y = response.outputs["y"]
            ok = len(y.float_val) == ROWS and y.float_val[0] == 2.5 and y.float_val[-1] == 2.5
            record(Outcome("grpc", request_id, ok, "" if ok else "wrong answer"))
            ready.set()


def _rest_worker(url: str, index: int, record: Callable[[Outcome], None], ready: threading.Event) -> None:
    with httpx.Client(timeout=60) as client:
        for n in range(10_000):
            request_id = f"rest-{index}-{n}"
            headers = {"content-type": "application/json", "x-request-id": request_id}
            try:
                response = client.post(f"{url}/v1/models/m:predict", content=REST_BODY, headers=headers)
            except httpx.HTTPError as exc:
                record(Outcome("rest", request_id, False, f"{type(exc).__name__}: {exc}"))
                return
            if response.status_code != 200:
                record(Outcome("rest", request_id, False, f"{response.status_code}: {response.text[:200]}"))
                return
            predictions = json.loads(response.content)["predictions"]
            ok = len(predictions) == ROWS and predictions[0] == predictions[-1] == 2.5
            record(Outcome("rest", request_id, ok, "" if ok else "wrong answer"))
            ready.set()


def _half_sent_grpc(port: int) -> tuple[RawCall, bytes]:
    """A gRPC call with half its message sent; answered quick call on the same connection after it proves
    the server has its headers (one connection's frames are handled in order)."""
    body = grpc_request().SerializeToString()
    call = RawCall(port)
    call.send_message(body[: len(body) // 2], declared=len(body), end=False)
    quick = call.open()
    small = predict_pb2.PredictRequest()
    small.model_spec.name = "m"
    small.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 1), np.float32)))
    call.send_message(small.SerializeToString(), stream=quick)
    assert call.status(quick) == (0, "")
    return call, body[len(body) // 2 :]


def _half_sent_rest(port: int) -> socket.socket:
    """A REST request with half its body sent. `Expect: 100-continue` (what curl sends for large bodies): the
    server answers 100 once it has parsed the head, in the same turn of its loop that starts the handler."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(
        b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(REST_BODY)}\r\n".encode() + b"Expect: 100-continue\r\n\r\n"
    )
    interim = b""
    while not interim.endswith(b"\r\n\r\n"):
        interim += sock.recv(1)
    assert interim.startswith(b"HTTP/1.1 100"), interim
    sock.sendall(REST_BODY[: len(REST_BODY) // 2])
    return sock


def _http_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "content-length")
    while len(body) < length:
        chunk = sock.recv(1 << 20)
        assert chunk, "closed mid-body"
        body += chunk
    return int(lines[0].split()[1]), body


def test_sigterm_under_load_fails_no_call_the_server_had_started() -> None:
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def record(outcome: Outcome) -> None:
        with lock:
            outcomes.append(outcome)

    args = ["--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", "--drain_delay_seconds=0"]
    with ServerProcess(args) as server:
        assert server.proc is not None
        grpc_call, grpc_rest = _half_sent_grpc(server.grpc_port)
        rest_sock = _half_sent_rest(server.rest_port)
        workers: list[threading.Thread] = []
        ready: list[threading.Event] = []
        for index in range(WORKERS):
            for worker, where in ((_grpc_worker, server.grpc_target), (_rest_worker, server.rest_url)):
                ready.append(threading.Event())
                workers.append(threading.Thread(target=worker, args=(where, index, record, ready[-1]), daemon=True))
                workers[-1].start()
        for event in ready:  # every loop has had an answer: the next calls are on their way
            assert event.wait(120), outcomes
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for_line("drain_started")
        grpc_call.send(grpc_rest, end=True)  # the half-sent calls finish after the signal
        rest_sock.sendall(REST_BODY[len(REST_BODY) // 2 :])
        grpc_status = grpc_call.status()
        rest_status, rest_body = _http_response(rest_sock)
        grpc_call.close()
        rest_sock.close()
        for thread in workers:
            thread.join(120)
            assert not thread.is_alive()
        assert server.proc.wait(60) == 0
    assert grpc_status == (0, "")
    assert rest_status == 200, rest_body[:300]
    assert len(json.loads(rest_body)["predictions"]) == ROWS

    logged = {str(e["request_id"]): e for e in server.events("request_finished")}
    admitted: list[Outcome] = []
    refused: list[Outcome] = []
    unseen: list[Outcome] = []
    wrong: list[tuple[Outcome, object]] = []
    for outcome in outcomes:
        line = logged.get(outcome.request_id)
        if line is None:
            unseen.append(outcome)
            if outcome.ok or not _connection_failure(outcome):
                wrong.append((outcome, None))
        elif line["status"] == "UNAVAILABLE" and line.get("error") == SHUTTING_DOWN:
            refused.append(outcome)
            if outcome.ok:
                wrong.append((outcome, line))
        else:
            admitted.append(outcome)
            if not outcome.ok or line["status"] != "OK":
                wrong.append((outcome, line))
    summary = f"admitted {len(admitted)}, refused by the drain {len(refused)}, never received {len(unseen)}"
    assert not wrong, f"{summary}; wrong: {wrong}"
    assert len(admitted) >= 2 * WORKERS, summary
    assert not server.events("drain_timed_out")


def _connection_failure(outcome: Outcome) -> bool:
    """What a call the server never read fails with: no connection, or one closed before any answer."""
    if outcome.protocol == "grpc":
        return outcome.error.startswith("UNAVAILABLE") and SHUTTING_DOWN not in outcome.error
    return outcome.error.startswith(("ConnectError", "RemoteProtocolError", "ReadError", "WriteError"))
