"""TF Serving flags that were accepted and then ignored, now applied (issue 10): each test shows the effect a
user sees. `tests/unit/test_flag_table.py` names the test of every applied flag."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import grpc
import h2.connection
import h2.events
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.e2e.server import ServerProcess
from tests.paths import testdata

pytestmark = pytest.mark.e2e

HALF_PLUS_TWO = testdata("saved_model_half_plus_two_cpu")


def predict(target: str, rows: int = 1) -> float:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((rows, 1), np.float32)))
    with grpc.insecure_channel(target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    return float(response.outputs["y"].float_val[0])


def wait_for_goaway(port: int) -> h2.events.ConnectionTerminated | None:
    """Open a raw HTTP/2 connection and read until the server's GOAWAY (or the socket closes / times out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        conn = h2.connection.H2Connection()
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        while True:
            data = sock.recv(65536)
            if not data:
                return None
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ConnectionTerminated):
                    return event
            sock.sendall(conn.data_to_send())


def test_max_connection_age_sends_goaway() -> None:
    # Issue 10: users set grpc.max_connection_age_ms so connections rebalance; no GOAWAY was ever sent.
    server = ServerProcess([
        "--model_name=m", f"--model_base_path={HALF_PLUS_TWO}",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=300,grpc.keepalive_time_ms=60000,grpc.foo=1",
    ])
    with server:
        event = wait_for_goaway(server.grpc_port)
        assert event is not None
        assert event.error_code == 0  # NO_ERROR: a graceful GOAWAY
        # the official client follows the GOAWAY onto new connections without failing a call
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "m"
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 1), np.float32)))
            for _ in range(3):
                assert stub.Predict(request, timeout=30).outputs["y"].float_val == [2.5]
                wait_for_goaway(server.grpc_port)  # > one connection age passes between calls
        ignored = [e for e in server.log_events() if e.get("event") == "grpc_channel_argument_ignored"]
        assert [e["argument"] for e in ignored] == ["grpc.foo"]


def test_max_send_message_length_bounds_responses() -> None:
    server = ServerProcess([
        "--model_name=m", f"--model_base_path={HALF_PLUS_TWO}",
        "--grpc_channel_arguments=grpc.max_send_message_length=64",
    ])
    with server:
        assert predict(server.grpc_target, rows=1) == 2.5
        with pytest.raises(grpc.RpcError) as info:
            predict(server.grpc_target, rows=100)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_per_model_batching_parameters(tmp_path: Path) -> None:
    # Issue 10: batching_params.pbtxt in the version directory was ignored, so 3 rows passed a limit of 2.
    version = tmp_path / "m" / "1"
    shutil.copytree(HALF_PLUS_TWO / "00000123", version)
    (version / "batching_params.pbtxt").write_text("max_batch_size { value: 2 }\nbatch_timeout_micros { value: 0 }\n")
    server = ServerProcess([
        "--model_name=m", f"--model_base_path={version.parent}", "--enable_batching",
        "--enable_per_model_batching_parameters",
    ])
    with server:
        ok = httpx.post(f"{server.rest_url}/v1/models/m:predict", json={"instances": [1.0, 2.0]}, timeout=30)
        assert ok.json() == {"predictions": [2.5, 3.0]}
        r = httpx.post(f"{server.rest_url}/v1/models/m:predict", json={"instances": [1.0, 2.0, 3.0]}, timeout=30)
        assert r.status_code == 400
        assert r.json() == {"error": "Task size 3 is larger than maximum input batch size 2"}


def test_tensorflow_session_config_file_reaches_the_sessions(tmp_path: Path) -> None:
    # Issue 10: the ConfigProto file was read for validation and never applied.
    config = tmp_path / "session.config"
    config.write_text("log_device_placement: true\n")
    server = ServerProcess([
        "--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", f"--tensorflow_session_config_file={config}",
    ])
    with server:
        assert predict(server.grpc_target) == 2.5
        # TensorFlow logs each node's placement only when the session's config asks for it
        server.wait_for_line("(Const): /job:localhost/replica:0/task:0/device:CPU:0")
