"""The lifecycle a user sees: a new version copied in under load is discovered, loaded and swapped in with
zero failed requests; a broken version keeps the old one serving; ReloadConfig adds and removes models;
labels resolve."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.e2e.server import Server, ServerProcess
from tests.paths import testdata
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

VERSION_DIR = testdata("saved_model_half_plus_two_cpu") / "00000123"
THREE_DIR = testdata("saved_model_half_plus_three") / "00000123"


def predict(stub: prediction_service_pb2_grpc.PredictionServiceStub, model: str, **spec: object) -> tuple[int, float]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if "label" in spec:
        request.model_spec.version_label = str(spec["label"])
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))
    response = stub.Predict(request, timeout=30)
    return response.model_spec.version.value, response.outputs["y"].float_val[0]


def statuses(server: Server, model: str) -> dict[str, str]:
    body = httpx.get(f"{server.rest_url}/v1/models/{model}", timeout=10).json()
    return {s["version"]: s["state"] for s in body["model_version_status"]}


def test_hot_swap_under_load_has_zero_failed_requests(tmp_path: Path) -> None:
    base = tmp_path / "m"
    shutil.copytree(VERSION_DIR, base / "1")
    server = Server(["--model_name=m", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"])
    with server, grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        stop = threading.Event()
        seen: list[tuple[int, float]] = []
        failures: list[str] = []

        def load() -> None:
            while not stop.is_set():
                try:
                    seen.append(predict(stub, "m"))
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code()}: {exc.details()}")

        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        wait_until(lambda: len(seen) >= 20)
        # Publish version 2 the way users do: copy a directory next to version 1, file by file.
        shutil.copytree(THREE_DIR, base / "2")
        server.wait_for_states("m", {2: "AVAILABLE", 1: "END"})
        swapped = len(seen)
        wait_until(lambda: len(seen) >= swapped + 100)  # answers after the swap
        stop.set()
        for w in workers:
            w.join(30)
        assert statuses(server, "m") == {"2": "AVAILABLE", "1": "END"}
    assert failures == []
    versions = [v for v, _ in seen]
    assert versions[0] == 1
    assert versions[-1] == 2
    assert {(1, 3.0), (2, 4.0)} == set(seen)  # each answer comes whole from one version
    first_two = versions.index(2)
    assert all(v == 2 for v in versions[first_two + 50:])


def test_broken_new_version_keeps_the_old_one_serving(tmp_path: Path) -> None:
    base = tmp_path / "m"
    shutil.copytree(VERSION_DIR, base / "1")
    server = Server(
        ["--model_name=m", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
         "--max_num_load_retries=1", "--load_retry_interval_micros=100000"]
    )
    with server, grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        broken = base / "2"
        shutil.copytree(VERSION_DIR, broken)
        (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
        server.wait_for_version_state("m", 2, "END")
        body = httpx.get(f"{server.rest_url}/v1/models/m", timeout=10).json()
        by_version = {s["version"]: s for s in body["model_version_status"]}
        assert by_version["2"]["state"] == "END"
        assert by_version["2"]["status"]["error_code"] != "OK"
        assert by_version["2"]["status"]["error_message"]
        assert by_version["1"]["state"] == "AVAILABLE"
        assert predict(stub, "m") == (1, 3.0)
        assert any(e.get("event") == "servable_load_retry" for e in server.log_events())


def reload_request(models: dict[str, Path], labels: dict[str, dict[str, int]] | None = None):  # type: ignore[no-untyped-def]
    request = model_management_pb2.ReloadConfigRequest()
    for name, path in models.items():
        config = request.config.model_config_list.config.add()
        config.name = name
        config.base_path = str(path)
        config.model_platform = "tensorflow"
        for label, version in (labels or {}).get(name, {}).items():
            config.version_labels[label] = version
        if name == "two":
            config.model_version_policy.all.SetInParent()
    return request


def test_reload_config_adds_removes_models_and_applies_labels(tmp_path: Path) -> None:
    two = testdata("saved_model_half_plus_two_2_versions")
    three = testdata("saved_model_half_plus_three")
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "three" base_path: "{three}" model_platform: "tensorflow" }} }}\n'
    )
    server = Server([f"--model_config_file={config}"])
    with server, grpc.insecure_channel(server.grpc_target) as channel:
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert predict(stub, "three") == (123, 4.0)
        response = models.HandleReloadConfigRequest(
            reload_request({"two": two}, {"two": {"stable": 123, "canary": 124}}), timeout=60
        )
        assert response.status.error_code == 0
        # the new model answers at once: the RPC returned when it was AVAILABLE
        assert predict(stub, "two", label="stable") == (123, 3.0)
        assert predict(stub, "two", label="canary") == (124, 3.0)
        r = httpx.post(f"{server.rest_url}/v1/models/two/labels/canary:predict", json={"instances": [[2.0]]})
        assert r.json() == {"predictions": [[3.0]]}
        # "three" left the config: unloaded
        server.wait_for_states("three", {123: "END"})
        assert statuses(server, "three") == {"123": "END"}
        with pytest.raises(grpc.RpcError) as info:
            predict(stub, "three")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # a label naming a version that does not exist is refused with TF Serving's text
        with pytest.raises(grpc.RpcError) as info:
            models.HandleReloadConfigRequest(reload_request({"two": two}, {"two": {"beta": 7}}), timeout=60)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert info.value.details() == (
            "Request to assign label to version 7 of model two, which is not currently available for inference"
        )
        # a relative base path is refused
        bad = reload_request({"two": Path("relative/path")})
        with pytest.raises(grpc.RpcError) as info:
            models.HandleReloadConfigRequest(bad, timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "to have an absolute path or URI" in info.value.details()
        # nothing already served was lost
        assert predict(stub, "two", label="stable") == (123, 3.0)


def test_labels_in_the_config_file_at_startup(tmp_path: Path) -> None:
    """tfs#1608: TF Serving refuses to start with labels in the config; aspired resolves them."""
    two = testdata("saved_model_half_plus_two_2_versions")
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list { config { "
        f'name: "two" base_path: "{two}" model_platform: "tensorflow" '
        "model_version_policy { all {} } "
        "version_labels { key: 'stable' value: 123 } version_labels { key: 'canary' value: 124 } } }\n"
    )
    server = Server([f"--model_config_file={config}"])
    with server, grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert predict(stub, "two", label="stable")[0] == 123
        assert predict(stub, "two", label="canary")[0] == 124


def test_startup_fails_with_tf_servings_message_for_a_broken_model() -> None:
    # A true process: the text on stdout and the exit status are what orchestrators see.
    server = ServerProcess(
        ["--model_name=bad", f"--model_base_path={testdata('bad_half_plus_two')}", "--max_num_load_retries=0"]
    )
    with pytest.raises(RuntimeError, match="exited with 255"):
        server.start()
    assert (
        "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
        "{{name: bad version: 123} due to error: UNIMPLEMENTED: Session Bundle is deprecated and removed.}, }"
    ) in server.output()
    server.stop()


def test_config_file_is_polled(tmp_path: Path) -> None:
    two = testdata("saved_model_half_plus_two_cpu")
    three = testdata("saved_model_half_plus_three")

    def config(*models: tuple[str, Path]) -> str:
        body = "".join(
            f'config {{ name: "{n}" base_path: "{p}" model_platform: "tensorflow" }} ' for n, p in models
        )
        return f"model_config_list {{ {body}}}\n"

    path = tmp_path / "models.config"
    path.write_text(config(("two", two)))
    server = Server([f"--model_config_file={path}", "--model_config_file_poll_wait_seconds=1"])
    with server, grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert predict(stub, "two") == (123, 3.0)
        path.write_text("this is not a config")  # logged and ignored: nothing already served is lost
        server.wait_for_line("Failed to read ModelServerConfig file", timeout=30)
        assert predict(stub, "two") == (123, 3.0)
        path.write_text(config(("two", two), ("three", three)))
        server.wait_for_states("three", {123: "AVAILABLE"})
        assert predict(stub, "three") == (123, 4.0)
        path.write_text(config(("three", three)))
        server.wait_for_states("two", {123: "END"})
        assert statuses(server, "two") == {"123": "END"}


def test_resource_preserving_unloads_before_loading(tmp_path: Path) -> None:
    """--aspired_version_policy=resource_preserving (tfs#2017): the old version ends before the new loads."""
    base = tmp_path / "m"
    shutil.copytree(VERSION_DIR, base / "1")
    server = Server(
        ["--model_name=m", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
         "--aspired_version_policy=resource_preserving"]
    )
    with server:
        shutil.copytree(THREE_DIR, base / "2")
        server.wait_for_states("m", {2: "AVAILABLE", 1: "END"})
        assert statuses(server, "m") == {"2": "AVAILABLE", "1": "END"}
        changes = [(e["version"], e["state"]) for e in server.log_events() if e.get("event") == "servable_state_changed"]
    assert changes.index((1, "END")) < changes.index((2, "LOADING"))


def test_reload_that_re_adds_a_removed_model_answers_once_it_serves(tmp_path: Path) -> None:
    # Found in review: the old END of a removed model made the re-adding ReloadConfig return at once.
    three = testdata("saved_model_half_plus_three")
    two = testdata("saved_model_half_plus_two_cpu")
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "a" base_path: "{three}" model_platform: "tensorflow" }} '
        f'config {{ name: "b" base_path: "{two}" model_platform: "tensorflow" }} }}\n'
    )
    with Server([f"--model_config_file={config}"]) as server, grpc.insecure_channel(server.grpc_target) as ch:
        models = model_service_pb2_grpc.ModelServiceStub(ch)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        models.HandleReloadConfigRequest(reload_request({"b": two}), timeout=60)
        server.wait_for_states("a", {123: "END"})
        response = models.HandleReloadConfigRequest(reload_request({"a": three, "b": two}), timeout=60)
        assert response.status.error_code == 0
        assert predict(stub, "a") == (123, 4.0)  # served when the RPC answers
