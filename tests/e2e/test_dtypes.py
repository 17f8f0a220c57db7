"""Every DataType TensorFlow can feed goes through Predict and back: an identity model exported here with
one input per dtype, called with the official gRPC client (typed fields and tensor_content) and over REST."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.e2e.server import Server

pytestmark = pytest.mark.e2e

DTYPES = {
    "float": tf.float32, "double": tf.float64, "int32": tf.int32, "uint8": tf.uint8, "int16": tf.int16,
    "int8": tf.int8, "string": tf.string, "complex64": tf.complex64, "int64": tf.int64, "bool": tf.bool,
    "bfloat16": tf.bfloat16, "uint16": tf.uint16, "complex128": tf.complex128, "half": tf.float16,
    "uint32": tf.uint32, "uint64": tf.uint64,
}
JSON_DTYPES = ["float", "double", "int32", "uint8", "int16", "int8", "string", "int64", "bool", "uint32", "uint64"]


def sample(name: str) -> np.ndarray:
    dtype = DTYPES[name]
    if name == "string":
        return np.array([[b"a", b"\xff\x00"], [b"", b"xyz"]], dtype=object)
    if name == "bool":
        return np.array([[True, False], [False, True]])
    if dtype.is_complex:
        return np.array([[1 + 2j, -3.5j], [0, 4]], dtype=dtype.as_numpy_dtype)
    return np.array([[1, 2], [3, 100]], dtype=dtype.as_numpy_dtype)


def export_identity(base: Path) -> Path:
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        inputs, outputs = {}, {}
        for name, dtype in DTYPES.items():
            x = v1.placeholder(dtype, shape=[None, 2], name=f"in_{name}")
            inputs[name] = v1.saved_model.utils.build_tensor_info(x)
            outputs[name] = v1.saved_model.utils.build_tensor_info(tf.identity(x, name=f"out_{name}"))
        signatures = {
            name: v1.saved_model.signature_def_utils.build_signature_def(
                {"x": inputs[name]}, {"y": outputs[name]}, "tensorflow/serving/predict"
            )
            for name in DTYPES
        }
        builder = v1.saved_model.Builder(str(base / "1"))
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
        builder.save()
    return base


@pytest.fixture(scope="module", params=[False, True], ids=["typed", "tensor_content"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = export_identity(tmp_path_factory.mktemp("identity") / "identity")
    flags = ["--model_name=identity", f"--model_base_path={base}"]
    if request.param:
        flags.append("--enable_serialization_as_tensor_content")
    with Server(flags) as process:
        process.tensor_content = request.param  # type: ignore[attr-defined]
        yield process


@pytest.mark.parametrize("name", list(DTYPES))
def test_grpc_round_trip(server: Server, name: str) -> None:
    value = sample(name)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "identity"
    request.model_spec.signature_name = name
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(value, dtype=DTYPES[name]))
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    out = response.outputs["y"]
    assert out.dtype == DTYPES[name].as_datatype_enum
    if server.tensor_content and name != "string":  # type: ignore[attr-defined]
        assert out.tensor_content
    back = tf.make_ndarray(out) if name != "string" or not out.tensor_content else None
    if back is None:  # TF writes string tensor_content in its own varint layout, as TF Serving would
        back = tf.io.parse_tensor(tf.io.serialize_tensor(tf.constant(value)), tf.string).numpy()
    np.testing.assert_array_equal(back.astype(value.dtype) if name != "string" else back, value)


@pytest.mark.parametrize("name", JSON_DTYPES)
def test_rest_round_trip(server: Server, name: str) -> None:
    value = sample(name)
    if name == "string":
        body = {"signature_name": name, "instances": [["a", "b"], ["", "xyz"]]}
        expected: object = [["a", "b"], ["", "xyz"]]
    else:
        body = {"signature_name": name, "instances": value.tolist()}
        expected = value.tolist()
    r = httpx.post(f"{server.rest_url}/v1/models/identity:predict", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": expected}


@pytest.mark.parametrize("name", ["half", "bfloat16", "complex64"])
def test_rest_unsupported_dtypes_are_unimplemented(server: Server, name: str) -> None:
    url = f"{server.rest_url}/v1/models/identity:predict"
    columnar = httpx.post(url, json={"signature_name": name, "inputs": [[1.0, 2.0]]}, timeout=30)
    assert columnar.status_code == 501
    assert columnar.json()["error"].startswith("Conversion of JSON Value")
    # row format wraps the inner status in INVALID_ARGUMENT, as TF Serving does
    row = httpx.post(url, json={"signature_name": name, "instances": [[1.0, 2.0]]}, timeout=30)
    assert row.status_code == 400
    assert "Error: UNIMPLEMENTED: Conversion of JSON Value" in row.json()["error"]
