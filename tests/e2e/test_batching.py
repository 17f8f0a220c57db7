"""`--enable_batching` against the real server: merged batches give every caller its own rows, queue limits,
padding, splitting, shape errors, deadlines, unbatched stateful signatures, and start-up validation."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.e2e.conftest import MODELS, write_config
from tests.e2e.server import Server
from tests.paths import testdata
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

Stub: TypeAlias = Any  # tensorflow-serving-api's stubs have no type hints
new_stub = prediction_service_pb2_grpc.PredictionServiceStub
QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"

# One slow, small queue: a batch waits 2 s for company; only one batch may wait.
SLOW = """
max_batch_size { value: 4 }
batch_timeout_micros { value: 2000000 }
max_enqueued_batches { value: 1 }
num_batch_threads { value: 1 }
allowed_batch_sizes: 2
allowed_batch_sizes: 4
"""

# Large tasks split into executions of at most 8 rows, padded to 4 or 8.
SPLITTING = """
max_batch_size { value: 64 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 1000 }
num_batch_threads { value: 4 }
enable_large_batch_splitting { value: true }
max_execution_batch_size { value: 8 }
allowed_batch_sizes: 4
allowed_batch_sizes: 8
allowed_batch_sizes: 64
"""


def start(tmp: Path, batching: str | None, *extra: str) -> Server:
    models = {k: MODELS[k] for k in ("half_plus_two", "counter")}
    config = write_config(tmp / "models.config", models)
    if batching is None:
        params = testdata("batching_config.txt")
    else:
        params = tmp / "batching.config"
        params.write_text(batching)
    return Server(
        [
            f"--model_config_file={config}",
            "--file_system_poll_wait_seconds=0",
            "--enable_batching",
            f"--batching_parameters_file={params}",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def tf_config_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """TF Serving's own batching_config.txt: max_batch_size 128, 8 threads, no timeout."""
    with start(tmp_path_factory.mktemp("tf"), None) as server:
        yield server


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("slow")
    monitoring = tmp / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    flags = ["--rest_api_timeout_in_ms=300", f"--monitoring_config_file={monitoring}"]
    with start(tmp, SLOW, *flags) as server:
        yield server


def queued(server: Server) -> float:
    """Tasks waiting in the server's batch queues (`aspired_queue_depth`)."""
    page = httpx.get(f"{server.rest_url}/metrics", timeout=30).text
    return sum(s.value for f in text_string_to_metric_families(page) if f.name == "aspired_queue_depth"
               for s in f.samples)


@pytest.fixture(scope="module")
def splitting_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start(tmp_path_factory.mktemp("split"), SPLITTING) as server:
        yield server


def predict(model: str, signature: str = "", **inputs: object) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return request


def rows(n: int, start: float) -> np.ndarray:
    return (np.arange(n, dtype=np.float32) + start).reshape(-1, 1)


def y_of(response: predict_pb2.PredictResponse) -> np.ndarray:
    return np.asarray(tf.make_ndarray(response.outputs["y"]))


def hammer(server: Server, sizes: list[int]) -> None:
    """Concurrent Predicts of many sizes over gRPC (and some over REST): each must get its own rows."""
    with grpc.insecure_channel(server.grpc_target) as channel, httpx.Client(timeout=30) as http:
        stub = new_stub(channel)
        inputs = [rows(n, 1000.0 * i) for i, n in enumerate(sizes)]
        futures = {
            i: stub.Predict.future(predict("half_plus_two", x=x), timeout=60) for i, x in enumerate(inputs)
        }

        def rest(i: int) -> list[list[float]]:
            # Rows of shape [1], as the gRPC calls send: a [N] tensor could not share their batches.
            body = {"instances": inputs[i].tolist()}
            r = http.post(f"{server.rest_url}/v1/models/half_plus_two:predict", json=body)
            assert r.status_code == 200, r.text
            return r.json()["predictions"]  # type: ignore[no-any-return]

        with ThreadPoolExecutor(8) as pool:
            rest_results = dict(
                zip(range(0, len(sizes), 5), pool.map(rest, range(0, len(sizes), 5)), strict=True)
            )
        for i, future in futures.items():
            np.testing.assert_array_equal(y_of(future.result()), inputs[i] * 0.5 + 2)
        for i, values in rest_results.items():
            assert values == (inputs[i] * 0.5 + 2).tolist()


def test_concurrent_requests_get_their_own_rows(tf_config_server: Server) -> None:
    rng = random.Random(4)
    hammer(tf_config_server, [rng.randint(1, 40) for _ in range(300)])


def test_concurrent_split_and_padded_requests_get_their_own_rows(splitting_server: Server) -> None:
    rng = random.Random(5)
    hammer(splitting_server, [rng.choice([1, 3, 7, 9, 17, 64, rng.randint(1, 64)]) for _ in range(200)])


def test_task_larger_than_max_batch_size(splitting_server: Server) -> None:
    with grpc.insecure_channel(splitting_server.grpc_target) as channel, pytest.raises(grpc.RpcError) as info:
        new_stub(channel).Predict(predict("half_plus_two", x=rows(65, 0)), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "Task size 65 is larger than maximum input batch size 64"


def test_stateful_zero_input_signatures_run_unbatched_in_order(tf_config_server: Server) -> None:
    with grpc.insecure_channel(tf_config_server.grpc_target) as channel:
        stub = new_stub(channel)
        stub.Predict(predict("counter", "reset_counter"), timeout=30)
        futures = [stub.Predict.future(predict("counter", "incr_counter"), timeout=30) for _ in range(20)]
        values = sorted(float(tf.make_ndarray(f.result().outputs["output"])) for f in futures)
        assert values == [float(v) for v in range(1, 21)]
        got = stub.Predict(predict("counter", "get_counter"), timeout=30)
        assert float(tf.make_ndarray(got.outputs["output"])) == 20.0
        # A scalar input has no batch dimension either.
        by = stub.Predict(predict("counter", "incr_counter_by", delta=np.float32(2.5)), timeout=30)
        assert float(tf.make_ndarray(by.outputs["output"])) == 22.5
        # A [1] input is batched and reaches TensorFlow, which refuses it for the scalar counter.
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(predict("counter", "incr_counter_by", delta=np.array([1.0], np.float32)), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Parameters and update must be the same size" in info.value.details()


def test_full_queue_is_unavailable_at_once(slow_server: Server) -> None:
    with grpc.insecure_channel(slow_server.grpc_target) as channel:
        stub = new_stub(channel)
        waiting = stub.Predict.future(predict("half_plus_two", x=rows(3, 1)), timeout=30)
        wait_until(lambda: queued(slow_server) == 1)  # it now waits in the open batch for company (2 s)
        with pytest.raises(grpc.RpcError) as info:  # no room in the open batch, no room for another batch
            stub.Predict(predict("half_plus_two", x=rows(2, 1)), timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert info.value.details() == QUEUE_FULL
        r = httpx.post(
            f"{slow_server.rest_url}/v1/models/half_plus_two:predict", json={"instances": [1.0, 2.0]}
        )
        assert r.status_code == 503
        assert r.json() == {"error": QUEUE_FULL}
        # The waiting task ran after its timeout, padded from 3 to 4 rows; the padding row is not returned.
        np.testing.assert_array_equal(y_of(waiting.result()), rows(3, 1) * 0.5 + 2)


def test_different_shapes_in_one_batch_fail_it(slow_server: Server) -> None:
    with grpc.insecure_channel(slow_server.grpc_target) as channel:
        stub = new_stub(channel)
        narrow = stub.Predict.future(predict("half_plus_two", x=rows(1, 1)), timeout=30)
        wait_until(lambda: queued(slow_server) == 1)
        wide = stub.Predict.future(predict("half_plus_two", x=np.ones((1, 2), np.float32)), timeout=30)
        for future in (narrow, wide):
            with pytest.raises(grpc.RpcError) as info:
                future.result()
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert info.value.details() == (
                "Tensors with name 'x:0' from different tasks have different shapes and padding is turned off. "
                "Set pad_variable_length_inputs to true, or ensure that all tensors with the same name have "
                "equal dimensions starting with the first dim."
            )


def test_rest_timeout_drops_a_queued_request(slow_server: Server) -> None:
    started = time.monotonic()
    r = httpx.post(
        f"{slow_server.rest_url}/v1/models/half_plus_two:predict", json={"instances": [1.0]}, timeout=30
    )
    assert r.status_code == 504
    assert r.json() == {"error": "Run() timeout exceeded while waiting in batching queue"}
    # --rest_api_timeout_in_ms=300: answered long before the 2 s batch timeout
    assert 0.25 < time.monotonic() - started < 1.9


def test_grpc_deadline_bounds_the_stay(slow_server: Server) -> None:
    with grpc.insecure_channel(slow_server.grpc_target) as channel, pytest.raises(grpc.RpcError) as info:
        new_stub(channel).Predict(predict("half_plus_two", x=rows(1, 1)), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_invalid_allowed_batch_sizes_stop_the_start(tmp_path: Path) -> None:
    server = start(tmp_path, "max_batch_size { value: 4 }\nallowed_batch_sizes: 3\n")
    with pytest.raises(RuntimeError, match="exited with 255") as info:
        server.start()
    server.stop()
    assert (
        "Failed to start server. Error: INVALID_ARGUMENT: Last entry in allowed_batch_sizes must match "
        "max_batch_size; last entry was 3; expected 4"
    ) in str(info.value)
