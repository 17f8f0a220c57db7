"""A SavedModel is input, not code (issue 10): whatever its loading raises becomes a failed version with the
error in GetModelStatus, the other versions and models keep serving, and the process stays up."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.e2e.server import Server
from tests.paths import testdata

pytestmark = pytest.mark.e2e

VERSION_DIR = testdata("saved_model_half_plus_two_cpu") / "00000123"


def copy_with_corrupt_asset(target: Path) -> None:
    """half_plus_two whose asset collection holds bytes that are not an AssetFileDef: TensorFlow's loader
    raises protobuf's DecodeError, an exception no load error handler expected."""
    shutil.copytree(VERSION_DIR, target)
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((target / "saved_model.pb").read_bytes())
    saved_model.meta_graphs[0].collection_def["saved_model_assets"].any_list.value[0].value = b"\xff\xff\xff"
    (target / "saved_model.pb").write_bytes(saved_model.SerializeToString())


def wait_for_state(server: Server, model: str, version: str, state: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = httpx.get(f"{server.rest_url}/v1/models/{model}", timeout=10).json()
        if any(s["version"] == version and s["state"] == state for s in body.get("model_version_status", [])):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{model}/{version} never reached {state}")


def test_unexpected_load_exception_fails_the_version_not_the_server(tmp_path: Path) -> None:
    # Issue 10: a load error outside a four-exception allow-list escaped the loader and ended the process.
    base = tmp_path / "m"
    shutil.copytree(VERSION_DIR, base / "1")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    server = Server(
        ["--model_name=m", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
         "--max_num_load_retries=0", f"--monitoring_config_file={monitoring}"]
    )
    with server, grpc.insecure_channel(server.grpc_target) as channel:
        copy_with_corrupt_asset(base / "2")
        wait_for_state(server, "m", "2", "END")
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "m"
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
        by_version = {s.version: s for s in status.model_version_status}
        assert by_version[1].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert by_version[2].state == get_model_status_pb2.ModelVersionStatus.END
        assert by_version[2].status.error_code == grpc.StatusCode.UNKNOWN.value[0]
        assert by_version[2].status.error_message.startswith("DecodeError: ")
        predict = predict_pb2.PredictRequest()
        predict.model_spec.name = "m"
        predict.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(predict, timeout=30)
        assert response.outputs["y"].float_val[0] == 3.0
        failures = [e for e in server.log_events() if e.get("event") == "servable_load_attempt_failed"]
        assert len(failures) == 1  # logged once, with the traceback
        assert "DecodeError" in str(failures[0].get("exception"))

        # a good version 3 replaces version 1, whose unload is measured
        shutil.copytree(VERSION_DIR, base / "3")
        wait_for_state(server, "m", "1", "END")
        page = httpx.get(f"{server.rest_url}/metrics", timeout=10).text
        assert 'aspired_unload_duration_seconds_count{model="m",version="1"} 1.0' in page
    assert server.returncode == 0  # it stopped when asked to, not on the bad model
