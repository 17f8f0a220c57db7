"""Deadlines reach the TensorFlow run (issue 10): the remaining time of `--rest_api_timeout_in_ms` or a gRPC
deadline is `RunOptions.timeout_in_ms`, so a slow run ends in 504 / DEADLINE_EXCEEDED at the deadline and
frees its inference thread, as in TF Serving."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.e2e


def export_slow_model(version_dir: Path) -> None:
    """`y = n` after a while loop of `n` iterations: as slow as the caller asks."""
    graph = tf.Graph()
    with graph.as_default():
        n = tf.compat.v1.placeholder(tf.int64, shape=[None], name="n")
        limit = tf.reduce_max(n)
        _, count = tf.while_loop(lambda i, c: i < limit, lambda i, c: (i + 1, c + 1.0),
                                 (tf.constant(0, tf.int64), tf.constant(0.0)))
        y = tf.identity(tf.fill(tf.shape(n), count), name="y")
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(version_dir))
            signature = tf.compat.v1.saved_model.predict_signature_def({"n": n}, {"y": y})
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
            builder.save()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    base = tmp_path_factory.mktemp("slow") / "slow"
    export_slow_model(base / "1")
    batching = base.parent / "batching.config"
    batching.write_text("max_batch_size { value: 8 }\nnum_batch_threads { value: 1 }\n")
    return ServerProcess([
        "--model_name=slow", f"--model_base_path={base}", "--rest_api_timeout_in_ms=1000",
        "--enable_batching", f"--batching_parameters_file={batching}",
    ])


def test_rest_timeout_ends_a_slow_run(server: ServerProcess) -> None:
    with server:
        quick = httpx.post(f"{server.rest_url}/v1/models/slow:predict", json={"instances": [10]}, timeout=60)
        assert quick.json() == {"predictions": [10.0]}
        # 10^12 iterations would take hours: the run is cut at the deadline
        slow = httpx.post(f"{server.rest_url}/v1/models/slow:predict", json={"instances": [10**12]}, timeout=60)
        assert slow.status_code == 504
        # the only inference thread is free again: the next request runs
        again = httpx.post(f"{server.rest_url}/v1/models/slow:predict", json={"instances": [10]}, timeout=60)
        assert again.json() == {"predictions": [10.0]}

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "slow"
        request.inputs["n"].CopyFrom(tf.make_tensor_proto(np.array([10**12], np.int64)))
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(request, timeout=1.0)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            request.inputs["n"].CopyFrom(tf.make_tensor_proto(np.array([10], np.int64)))
            assert stub.Predict(request, timeout=60).outputs["y"].float_val == [10.0]
