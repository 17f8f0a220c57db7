"""Prometheus series TF Serving users chart (issue 10): example counts of Classify/Regress/MultiInference,
TensorFlow core's session-run counters, and label values only for models that exist."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import httpx
import pytest
from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc

from tests.e2e.server import ServerProcess
from tests.paths import testdata
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

HALF_PLUS_TWO = testdata("saved_model_half_plus_two_cpu")


def test_example_counts_and_bounded_model_labels(tmp_path: Path) -> None:
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    server = ServerProcess(
        ["--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", f"--monitoring_config_file={monitoring}"]
    )
    with server, grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "m"
        request.model_spec.signature_name = "classify_x_to_y"
        for value in (1.0, 2.0, 3.0):
            request.input.example_list.examples.add().features.feature["x"].float_list.value.append(value)
        assert len(stub.Classify(request, timeout=30).result.classifications) == 3
        for i in range(20):  # unknown names from unauthenticated clients
            httpx.post(f"{server.rest_url}/v1/models/nope-{i}:predict", json={"instances": [1.0]}, timeout=30)
        page = httpx.get(f"{server.rest_url}/metrics", timeout=30).text
    assert ':tensorflow:serving:request_example_count_total{model="m"} 3' in page
    assert ':tensorflow:serving:request_example_counts_bucket{model="m",le="4"} 1' in page
    assert ':tensorflow:serving:request_example_counts_count{model="m"} 1' in page
    assert "nope-" not in page
    runs = re.search(r"^:tensorflow:core:graph_runs\{\} (\d+)$", page, re.MULTILINE)
    assert runs is not None
    assert int(runs.group(1)) >= 1  # at least the Classify run
    assert re.search(r"^:tensorflow:core:graph_run_time_usecs\{\} \d+$", page, re.MULTILINE)
    assert ':tensorflow:serving:request_count{model_name="<unknown>",status="NOT_FOUND"} 20' in page


def test_tensorflows_own_registry_is_exported(tmp_path: Path) -> None:
    """Every metric of TensorFlow's registry, as TF Serving's exporter writes it (issue 10)."""
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    server = ServerProcess(
        ["--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", f"--monitoring_config_file={monitoring}"]
    )
    with server:
        for _ in range(3):
            answer = httpx.post(f"{server.rest_url}/v1/models/m:predict", json={"instances": [1.0, 2.0]}, timeout=30)
            assert answer.status_code == 200

        def registry_page() -> str | None:  # the reader is built in a thread at the first start
            text = httpx.get(f"{server.rest_url}/metrics", timeout=30).text
            return text if ":tensorflow:core:direct_session_runs{}" in text else None

        page = wait_until(registry_page, timeout=120, message="TensorFlow's registry never joined the page")
    assert "# TYPE :tensorflow:core:graph_build_calls counter" in page
    assert re.search(r'^:tensorflow:core:graph_optimization_usecs\{kind="Grappler",name="\*"\} \d+$', page, re.MULTILINE)
    assert re.search(r"^:tensorflow:core:graph_run_time_usecs_histogram_bucket\{le=\"\+Inf\"\} \d+$", page, re.MULTILINE)
    runs = re.search(r"^:tensorflow:core:graph_runs\{\} (\d+)$", page, re.MULTILINE)
    assert runs is not None
    assert int(runs.group(1)) >= 3
    assert page.count("# TYPE :tensorflow:core:graph_runs ") == 1
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 3' in page
    assert "aspired_requests_total{" in page
