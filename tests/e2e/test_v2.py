"""The Open Inference Protocol (KServe V2) against a real server (issue 12): Triton's own clients
(`tritonclient[http]`, `tritonclient[grpc]`, in their own venv) on TF Serving's test models and a string
model, raw HTTP and gRPC for the error cases, and one model answering Predict and ModelInfer alike."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from svc._proto.inference import grpc_service_pb2 as pb
from tests.e2e.conftest import write_config
from tests.e2e.server import Server
from tests.e2e.test_dtypes import export_identity
from tests.e2e.v2.client_venv import ensure_venv, run_client
from tests.paths import testdata

pytestmark = pytest.mark.e2e

MODELS = {
    "half_plus_two": "saved_model_half_plus_two_cpu",
    "half_plus_two_tf2": "saved_model_half_plus_two_tf2_cpu",
    "counter": "saved_model_counter",
    "two_versions": "saved_model_half_plus_two_2_versions",
    "spare": "saved_model_half_plus_three",
}
PROTOCOLS = ["http", "grpc"]


@pytest.fixture(scope="session")
def triton_python() -> Path:
    return ensure_venv()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("v2")
    identity = export_identity(root / "identity")
    config = write_config(
        root / "models.config",
        MODELS,
        {"two_versions": '    model_version_policy { all {} }\n    version_labels { key: "stable" value: 123 }\n'},
    )
    text = config.read_text().rstrip().removesuffix("}")
    text += f'  config {{\n    name: "identity"\n    base_path: "{identity}"\n    model_platform: "tensorflow"\n  }}\n}}\n'
    config.write_text(text)
    monitoring = root / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    flags = [f"--model_config_file={config}", "--file_system_poll_wait_seconds=0",
             f"--monitoring_config_file={monitoring}"]
    with Server(flags) as process:
        yield process


def url(server: Server, protocol: str) -> str:
    return server.grpc_target if protocol == "grpc" else f"127.0.0.1:{server.rest_port}"


def client(python: Path, server: Server, protocol: str, *ops: dict[str, Any]) -> list[Any]:
    results: list[Any] = run_client(python, protocol, url(server, protocol), json.dumps(list(ops)))
    return results


def fp32(name: str, values: list[float], shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": shape, "values": values}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health_metadata_and_index(triton_python: Path, server: Server, protocol: str) -> None:
    live, ready, model_ready, unknown_ready, v123_ready, label_ready, v999_ready, meta, model, tf2, index = client(
        triton_python, server, protocol,
        {"op": "live"}, {"op": "ready"}, {"op": "model_ready", "model": "half_plus_two"},
        {"op": "model_ready", "model": "nope"}, {"op": "model_ready", "model": "two_versions", "version": "123"},
        {"op": "model_ready", "model": "two_versions", "version": "stable"},
        {"op": "model_ready", "model": "two_versions", "version": "999"},
        {"op": "server_metadata"}, {"op": "model_metadata", "model": "half_plus_two"},
        {"op": "model_metadata", "model": "half_plus_two_tf2"}, {"op": "index"},
    )
    assert (live, ready, model_ready, unknown_ready) == (True, True, True, False)
    assert (v123_ready, label_ready, v999_ready) == (True, True, False)
    assert meta["name"] == "aspired"
    assert set(meta["extensions"]) >= {"binary_tensor_data", "model_repository"}
    assert model == {
        "name": "half_plus_two", "versions": ["123"], "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": ["-1", "1"] if protocol == "grpc" else [-1, 1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": ["-1", "1"] if protocol == "grpc" else [-1, 1]}],
    }
    assert tf2["inputs"][0]["datatype"] == "FP32"
    entries = {(e["name"], e.get("version", "")): e["state"] for e in index}
    assert entries[("half_plus_two", "123")] == "READY"
    assert entries[("two_versions", "124")] == "READY"
    assert entries[("counter", "123")] == "READY"


@pytest.mark.parametrize(("protocol", "binary"), [("http", True), ("http", False), ("grpc", True)])
def test_infer_tf1_and_tf2_exports(triton_python: Path, server: Server, protocol: str, binary: bool) -> None:
    x = fp32("x", [1.0, 2.0, 5.0], [3, 1])
    tf1, tf2, v123, label, latest = client(
        triton_python, server, protocol,
        {"op": "infer", "model": "half_plus_two", "inputs": [x], "outputs": ["y"], "binary": binary, "id": "r-1"},
        {"op": "infer", "model": "half_plus_two_tf2", "inputs": [x], "binary": binary},
        {"op": "infer", "model": "two_versions", "version": "123", "inputs": [x], "binary": binary},
        {"op": "infer", "model": "two_versions", "version": "stable", "inputs": [x], "binary": binary},
        {"op": "infer", "model": "two_versions", "inputs": [x], "binary": binary},
    )
    assert tf1["outputs"]["y"]["values"] == [2.5, 3.0, 4.5]
    assert tf1["outputs"]["y"]["shape"] == [3, 1]
    assert (tf1["model_name"], tf1["model_version"], tf1["id"]) == ("half_plus_two", "123", "r-1")
    if protocol == "http":
        assert tf1["binary"] == [binary]
        assert tf1["datatypes"] == ["FP32"]
    else:
        assert tf1["raw"] == 1  # raw in, raw out
    assert tf2["outputs"]["y"]["values"] == [2.5, 3.0, 4.5]
    assert (v123["model_version"], label["model_version"], latest["model_version"]) == ("123", "123", "124")
    assert v123["outputs"]["y"]["values"] == [2.5, 3.0, 4.5]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_counter_signatures_by_parameter(triton_python: Path, server: Server, protocol: str) -> None:
    def call(signature: str) -> dict[str, Any]:
        return {"op": "infer", "model": "counter", "inputs": [], "parameters": {"signature_name": signature}}

    before, incremented, after = client(
        triton_python, server, protocol, call("get_counter"), call("incr_counter"), call("get_counter")
    )
    value = before["outputs"]["output"]["values"][0]
    assert incremented["outputs"]["output"]["values"] == [value + 1]
    assert after["outputs"]["output"]["values"] == [value + 1]


@pytest.mark.parametrize(("protocol", "binary"), [("http", True), ("http", False), ("grpc", True)])
def test_string_model(triton_python: Path, server: Server, protocol: str, binary: bool) -> None:
    items = [b"a", "\u00e9t\u00e9".encode(), b"", b"xyz"]
    if binary:
        items[2] = b"\xff\x00"  # not UTF-8: only the binary encodings carry it
    spec = {"name": "x", "datatype": "BYTES", "shape": [2, 2], "hex": [i.hex() for i in items]}
    (result,) = client(
        triton_python, server, protocol,
        {"op": "infer", "model": "identity", "inputs": [spec], "outputs": ["y"], "binary": binary,
         "parameters": {"signature_name": "string"}},
    )
    assert result["outputs"]["y"] == {"shape": [2, 2], "hex": [i.hex() for i in items]}


DATATYPES = {
    "float": ("FP32", [1.5, -2.0]), "double": ("FP64", [1.25, 1e300]), "int32": ("INT32", [-7, 2**31 - 1]),
    "uint8": ("UINT8", [0, 255]), "int16": ("INT16", [-32768, 5]), "int8": ("INT8", [-128, 127]),
    "int64": ("INT64", [-(2**63), 2**62]), "bool": ("BOOL", [True, False]), "uint16": ("UINT16", [65535, 1]),
    "uint32": ("UINT32", [2**32 - 1, 0]), "uint64": ("UINT64", [2**64 - 1, 3]), "half": ("FP16", [0.5, -1.0]),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_datatype_round_trips(triton_python: Path, server: Server, protocol: str) -> None:
    ops = [
        {"op": "infer", "model": "identity", "parameters": {"signature_name": signature}, "outputs": ["y"],
         "inputs": [{"name": "x", "datatype": datatype, "shape": [1, 2], "values": values}]}
        for signature, (datatype, values) in DATATYPES.items()
    ]
    results = client(triton_python, server, protocol, *ops)
    for (signature, (_, values)), result in zip(DATATYPES.items(), results, strict=True):
        assert "error" not in result, (signature, result)
        assert result["outputs"]["y"]["values"] == values, signature


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_sees_protocol_errors(triton_python: Path, server: Server, protocol: str) -> None:
    x = fp32("x", [1.0], [1, 1])
    unknown, wrong_type, complex_sig = client(
        triton_python, server, protocol,
        {"op": "infer", "model": "nope", "inputs": [x]},
        {"op": "infer", "model": "half_plus_two", "inputs": [{**x, "datatype": "FP64"}]},
        {"op": "infer", "model": "identity", "parameters": {"signature_name": "complex64"},
         "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "values": [1, 2]}]},
    )
    if protocol == "grpc":
        assert unknown["status"] == "StatusCode.NOT_FOUND"
        assert wrong_type["status"] == complex_sig["status"] == "StatusCode.INVALID_ARGUMENT"
    else:
        assert unknown["status"] == "404"
        assert wrong_type["status"] == complex_sig["status"] == "400"
    assert "'x'" in wrong_type["error"]
    assert "DT_COMPLEX64" in complex_sig["error"]


def test_predict_and_model_infer_give_identical_numbers(triton_python: Path, server: Server) -> None:
    values = np.random.default_rng(12).standard_normal((64, 1)).astype(np.float32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(values))
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    predicted = tf.make_ndarray(response.outputs["y"])
    (v2,) = client(
        triton_python, server, "grpc",
        {"op": "infer", "model": "half_plus_two", "inputs": [fp32("x", values.ravel().tolist(), [64, 1])]},
    )
    assert v2["model_version"] == str(response.model_spec.version.value)
    assert bytes.fromhex(v2["outputs"]["y"]["hex"]) == predicted.astype("<f4").tobytes()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_repository_unload_and_load(triton_python: Path, server: Server, protocol: str) -> None:
    x = fp32("x", [2.0], [1, 1])
    unloaded, ready_after_unload, server_ready, index, failed_infer = client(
        triton_python, server, protocol,
        {"op": "unload", "model": "spare"}, {"op": "model_ready", "model": "spare"}, {"op": "ready"},
        {"op": "index"}, {"op": "infer", "model": "spare", "inputs": [x]},
    )
    assert (unloaded, ready_after_unload, server_ready) == (True, False, True)  # an unloaded model is not waited for
    assert {(e["name"], e["state"]) for e in index} >= {("spare", "UNAVAILABLE"), ("half_plus_two", "READY")}
    assert failed_infer["status"] in ("404", "StatusCode.NOT_FOUND")
    status = httpx.get(f"{server.rest_url}/v1/models/spare", timeout=30).json()
    assert [s["state"] for s in status["model_version_status"]] == ["END"]
    loaded, ready_after_load, result = client(
        triton_python, server, protocol,
        {"op": "load", "model": "spare"}, {"op": "model_ready", "model": "spare"},
        {"op": "infer", "model": "spare", "inputs": [x]},
    )
    assert (loaded, ready_after_load) == (True, True)  # load answers once the model serves
    assert result["outputs"]["y"]["values"] == [4.0]


# -- raw HTTP and gRPC: the protocol's errors, never a 500 -------------------------------------------------


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.rest_url, timeout=30) as c:
        yield c


def infer_body(datatype: str = "FP32", shape: list[int] | None = None, data: Any = None, name: str = "x") -> Any:
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape or [2, 1], "data": data or [1.0, 2.0]}]}


@pytest.mark.parametrize(
    ("path", "body", "status", "text"),
    [
        ("/v2/models/nope/infer", infer_body(), 404, "nope"),
        ("/v2/models/half_plus_two/versions/7/infer", infer_body(), 404, "half_plus_two"),
        ("/v2/models/half_plus_two/infer", infer_body("FP64"), 400, "'x'"),
        ("/v2/models/half_plus_two/infer", infer_body(shape=[3, 1]), 400, "'x'"),
        ("/v2/models/half_plus_two/infer", infer_body(shape=[-1, 1]), 400, "'x'"),
        ("/v2/models/half_plus_two/infer", infer_body(data=["a", "b"]), 400, "'x'"),
        ("/v2/models/half_plus_two/infer", infer_body("NOPE"), 400, "'x'"),
        ("/v2/models/half_plus_two/infer", infer_body(name="z"), 400, "'z'"),
        ("/v2/models/half_plus_two/infer", {"inputs": 3}, 400, "inputs"),
        ("/v2/models/half_plus_two/infer", {**infer_body(), "parameters": {"signature_name": "nope"}}, 400, "nope"),
        ("/v2/models/half_plus_two/infer", {**infer_body(), "outputs": [{"name": "nope"}]}, 400, "nope"),
        ("/v2/repository/models/nope/load", {}, 404, "nope"),
        ("/v2/repository/models/spare/load", {"parameters": {"base_path": "/x"}}, 400, "base_path"),
    ],
)
def test_http_errors(http: httpx.Client, path: str, body: Any, status: int, text: str) -> None:
    r = http.post(path, json=body)
    assert r.status_code == status, r.text
    assert text in r.json()["error"]


def test_http_binary_errors(http: httpx.Client) -> None:
    def head(size: int) -> bytes:
        tensor = {"name": "x", "datatype": "FP32", "shape": [2, 1], "parameters": {"binary_data_size": size}}
        return json.dumps({"inputs": [tensor]}).encode()

    header = head(6)
    cases = [
        (header + b"\0" * 6, str(len(header)), "'x'"),  # 6 bytes cannot be 2 FP32 elements
        (header + b"\0" * 4, str(len(header)), "'x'"),  # shorter than binary_data_size
        (head(8) + b"\0" * 10, str(len(head(8))), "not claimed"),  # 2 bytes left over
        (header, str(len(header) + 10), "Inference-Header-Content-Length"),
        (b"{not json", "9", "JSON"),
    ]
    for body, length, text in cases:
        r = http.post("/v2/models/half_plus_two/infer", content=body,
                      headers={"Inference-Header-Content-Length": length})
        assert r.status_code == 400, r.text
        assert text in r.json()["error"]


def test_http_binary_output_and_nested_data(http: httpx.Client) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1], "data": [[1.0], [3.0]]}],
            "parameters": {"binary_data_output": True}, "id": "nested"}
    r = http.post("/v2/models/half_plus_two/infer", json=body)
    assert r.status_code == 200
    length = int(r.headers["inference-header-content-length"])
    doc = json.loads(r.content[:length])
    assert doc["id"] == "nested"
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert np.frombuffer(r.content[length:], "<f4").tolist() == [2.5, 3.5]


def test_http_health_and_server_metadata(http: httpx.Client) -> None:
    assert http.get("/v2/health/live").status_code == 200
    assert http.get("/v2/health/ready").status_code == 200
    assert http.get("/v2/models/nope/ready").status_code == 400
    assert http.get("/v2").json()["name"] == "aspired"
    missing = http.get("/v2/models/nope")
    assert missing.status_code == 404
    assert "error" in missing.json()
    assert http.get("/v2/no/such/route").status_code == 404


def _grpc_call(server: Server, method: str, request: Any, reply: Any) -> Any:
    with grpc.insecure_channel(server.grpc_target) as channel:
        call = channel.unary_unary(
            f"/inference.GRPCInferenceService/{method}",
            request_serializer=lambda m: m.SerializeToString(), response_deserializer=reply.FromString,
        )
        return call(request, timeout=30)


def _grpc_error(server: Server, request: pb.ModelInferRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _grpc_call(server, "ModelInfer", request, pb.ModelInferResponse)
    return info.value


def test_grpc_typed_contents_and_errors(server: Server) -> None:
    request = pb.ModelInferRequest(model_name="half_plus_two")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 1]).contents.fp32_contents.extend([1.0, 3.0])
    response = _grpc_call(server, "ModelInfer", request, pb.ModelInferResponse)
    assert list(response.outputs[0].contents.fp32_contents) == [2.5, 3.5]  # typed in, typed out
    assert not response.raw_output_contents

    unknown = pb.ModelInferRequest(model_name="nope")
    assert _grpc_error(server, unknown).code() == grpc.StatusCode.NOT_FOUND
    short = pb.ModelInferRequest(model_name="half_plus_two", raw_input_contents=[b"\0" * 4])
    short.inputs.add(name="x", datatype="FP32", shape=[2, 1])
    error = _grpc_error(server, short)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'x'" in (error.details() or "")
    mixed = pb.ModelInferRequest(model_name="half_plus_two", raw_input_contents=[b"\0" * 4, b""])
    mixed.inputs.add(name="x", datatype="FP32", shape=[1, 1])
    assert _grpc_error(server, mixed).code() == grpc.StatusCode.INVALID_ARGUMENT
    wrong = pb.ModelInferRequest(model_name="half_plus_two")
    wrong.inputs.add(name="x", datatype="INT32", shape=[1]).contents.int_contents.append(1)
    error = _grpc_error(server, wrong)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'x'" in (error.details() or "")


def test_v2_requests_are_logged_like_predict(server: Server, http: httpx.Client) -> None:
    r = http.post("/v2/models/half_plus_two/infer", json=infer_body(), headers={"x-request-id": "v2-log-1"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "v2-log-1"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = [e for e in server.log_events() if e.get("request_id") == "v2-log-1"]
        if lines:
            break
        time.sleep(0.1)
    (line,) = lines
    assert line["event"] == "request_finished"
    assert (line["model"], line["version"], line["signature"], line["protocol"], line["status"]) == (
        "half_plus_two", 123, "serving_default", "rest", "OK"
    )


def test_v2_deadline_and_metrics_are_predicts(server: Server, http: httpx.Client) -> None:
    """The batcher's deadline check and the request metrics see V2 calls as they see Predict."""
    expired = http.post("/v2/models/half_plus_two/infer", json={**infer_body(), "parameters": {"timeout": 0}})
    assert expired.status_code == 504, expired.text  # Triton's `timeout` (µs) shortens the deadline
    request = pb.ModelInferRequest(model_name="half_plus_two", raw_input_contents=[b"\0" * 4])
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1])
    request.parameters["timeout"].int64_param = 0
    assert _grpc_error(server, request).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    request.ClearField("parameters")
    assert _grpc_call(server, "ModelInfer", request, pb.ModelInferResponse).model_version == "123"
    text = http.get("/metrics").text
    counted = [
        line for line in text.splitlines()
        if line.startswith("aspired_requests_total{") and 'model="half_plus_two"' in line
        and 'version="123"' in line and 'api="ModelInfer"' in line and 'protocol="grpc"' in line
    ]
    assert any('code="OK"' in line for line in counted), counted
    assert any('code="DEADLINE_EXCEEDED"' in line for line in counted), counted


# One batch queue of size 2 that waits long for company: a Predict and a ModelInfer sent together merge.
MERGE = """
max_batch_size { value: 2 }
batch_timeout_micros { value: 30000000 }
max_enqueued_batches { value: 10 }
num_batch_threads { value: 1 }
"""


def test_v2_and_predict_share_one_batch(tmp_path: Path) -> None:
    """One request path: with --enable_batching a V2 ModelInfer and a TF Serving Predict join the same batch."""
    from tests.e2e.test_batching import start

    x = np.array([[1.0]], np.float32)
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "half_plus_two"
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[3.0]], np.float32)))
    infer = pb.ModelInferRequest(model_name="half_plus_two", raw_input_contents=[x.tobytes()])
    infer.inputs.add(name="x", datatype="FP32", shape=[1, 1])
    with start(tmp_path, MERGE) as process, grpc.insecure_channel(process.grpc_target) as channel:
        model_infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        v2_call = model_infer.future(infer, timeout=60, metadata=[("x-request-id", "merge-v2")])
        predict_call = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict.future(
            predict, timeout=60, metadata=[("x-request-id", "merge-predict")]
        )
        assert np.frombuffer(v2_call.result().raw_output_contents[0], "<f4").tolist() == [2.5]
        assert tf.make_ndarray(predict_call.result().outputs["y"]).tolist() == [[3.5]]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lines = {e["request_id"]: e for e in process.log_events()
                     if e.get("event") == "request_finished" and str(e.get("request_id", "")).startswith("merge-")}
            if len(lines) == 2:
                break
            time.sleep(0.1)
        assert {k: (v["api"], v["batch_size"]) for k, v in lines.items()} == {
            "merge-v2": ("ModelInfer", 2), "merge-predict": ("Predict", 2)
        }


# -- the unload rule across config-file polls --------------------------------------------------------------


def test_config_poll_keeps_an_explicit_unload_and_says_so(tmp_path: Path) -> None:
    """issue 12: a later config-file poll does not undo an explicit unload; it logs that it keeps it."""
    a, b = testdata("saved_model_half_plus_two_cpu"), testdata("saved_model_half_plus_three")
    path = tmp_path / "models.config"
    write_config(path, {"a": a.name, "b": b.name})
    with Server([f"--model_config_file={path}", "--model_config_file_poll_wait_seconds=1"]) as process, \
            httpx.Client(base_url=process.rest_url, timeout=60) as c:
        assert c.post("/v2/repository/models/b/unload").status_code == 200
        assert c.get("/v2/models/b/ready").status_code == 400
        assert c.get("/readyz").status_code == 200
        write_config(path, {"a": a.name, "b": b.name, "c": a.name})
        process.wait_for_line("model_kept_unloaded", timeout=60)
        deadline = time.monotonic() + 60
        while c.get("/v2/models/c/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.get("/v2/models/c/ready").status_code == 200
        assert c.get("/v2/models/b/ready").status_code == 400  # still unloaded after the poll applied the edit
        assert c.post("/v2/repository/models/b/load").status_code == 200
        assert c.get("/v2/models/b/ready").status_code == 200
        assert c.post("/v2/repository/models/b/unload").status_code == 200
        write_config(path, {"a": a.name, "c": a.name})  # dropping b forgets its unload
        process.wait_for_line("model_unload_forgotten", timeout=60)


def test_frontend_workers_speak_v2(triton_python: Path) -> None:
    """With --frontend_workers=2 the TF-free frontends serve V2 too; repository calls go to the model owner."""
    flags = [f"--model_base_path={testdata('saved_model_half_plus_two_cpu')}", "--model_name=m",
             "--frontend_workers=2"]
    with Server(flags) as process:
        x = fp32("x", [1.0, 2.0], [2, 1])
        for protocol in PROTOCOLS:
            result, ready, index, unloaded, ready_after_unload, server_ready, loaded, again = client(
                triton_python, process, protocol,
                {"op": "infer", "model": "m", "inputs": [x]}, {"op": "model_ready", "model": "m"}, {"op": "index"},
                {"op": "unload", "model": "m"}, {"op": "model_ready", "model": "m"}, {"op": "ready"},
                {"op": "load", "model": "m"}, {"op": "infer", "model": "m", "inputs": [x]},
            )
            assert result["outputs"]["y"]["values"] == [2.5, 3.0]
            assert ready is True
            assert [(e["name"], e["state"]) for e in index] == [("m", "READY")]
            # The owner publishes its snapshot to the asking worker before it answers, and each client keeps one
            # connection (one worker): the next call there sees the state the repository call waited for.
            assert (unloaded, ready_after_unload, server_ready) == (True, False, True)
            assert loaded is True
            assert again["outputs"]["y"]["values"] == [2.5, 3.0]
