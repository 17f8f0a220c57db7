"""ReloadConfig as a rollout script uses it (issue 10): labels moved by the RPC are in force when it returns,
and the response's `metric` list carries the requested TF metrics' increase, as TF Serving's."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.e2e.server import ServerProcess
from tests.paths import testdata

pytestmark = pytest.mark.e2e

TWO = testdata("saved_model_half_plus_two_2_versions")
THREE = testdata("saved_model_half_plus_three")


def config_request(stable: int, with_three: bool = False) -> model_management_pb2.ReloadConfigRequest:
    request = model_management_pb2.ReloadConfigRequest()
    model = request.config.model_config_list.config.add()
    model.name, model.base_path, model.model_platform = "two", str(TWO), "tensorflow"
    model.model_version_policy.all.SetInParent()
    model.version_labels["stable"] = stable
    if with_three:
        three = request.config.model_config_list.config.add()
        three.name, three.base_path, three.model_platform = "three", str(THREE), "tensorflow"
    return request


def test_moved_label_is_in_force_when_reload_returns(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "two" base_path: "{TWO}" model_platform: "tensorflow" '
        "model_version_policy { all {} } version_labels { key: \"stable\" value: 123 } } }\n"
    )
    server = ServerProcess([f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models"])
    with server, grpc.insecure_channel(server.grpc_target) as channel:
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "two"
        request.model_spec.version_label = "stable"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))
        for move in range(16):
            stable = 124 if move % 2 == 0 else 123
            models.HandleReloadConfigRequest(config_request(stable), timeout=60)
            # right after the RPC, the label resolves to the version it names (TF Serving's server_core.cc)
            assert predictions.Predict(request, timeout=30).model_spec.version.value == stable


def test_reload_response_reports_requested_metrics(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "two" base_path: "{TWO}" model_platform: "tensorflow" '
        "model_version_policy { all {} } } }\n"
    )
    server = ServerProcess([f"--model_config_file={config}"])
    with server, grpc.insecure_channel(server.grpc_target) as channel:
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        request = config_request(123, with_three=True)
        request.metric_names.append("/tensorflow/cc/saved_model/load_attempt_count")
        response = models.HandleReloadConfigRequest(request, timeout=60)
        assert response.status.error_code == 0
        [metric] = response.metric
        assert metric.name == "/tensorflow/cc/saved_model/load_attempt_count"
        assert metric.int64_value_increase >= 0
