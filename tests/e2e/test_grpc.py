"""The official tensorflow-serving-api gRPC client against a real server: Predict, GetModelMetadata,
GetModelStatus, and TF Serving's error codes and texts."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
)

from tests.paths import testdata

pytestmark = pytest.mark.e2e

Stub: TypeAlias = Any  # tensorflow-serving-api's stubs have no type hints


def predict_request(model: str, inputs: dict[str, object], **spec: object) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = int(value)  # type: ignore[call-overload]
        else:
            setattr(request.model_spec, key, value)
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(
            value if isinstance(value, tensor_pb2.TensorProto) else tf.make_tensor_proto(value)
        )
    return request


def rpc_error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_predict_half_plus_two(prediction_stub: Stub) -> None:
    x = np.array([[1.0], [2.0], [5.0]], dtype=np.float32)
    response = prediction_stub.Predict(predict_request("half_plus_two", {"x": x}), timeout=30)
    y = response.outputs["y"]
    assert list(y.float_val) == [2.5, 3.0, 4.5]  # typed fields by default, as TF Serving answers
    assert not y.tensor_content
    assert [d.size for d in y.tensor_shape.dim] == [3, 1]
    assert y.dtype == tf.float32.as_datatype_enum
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"


@pytest.mark.parametrize(("model", "expected"), [("half_plus_two_tf2", 3.0), ("half_plus_three", 4.0)])
def test_predict_other_exports(prediction_stub: Stub, model: str, expected: float) -> None:
    x = np.array([2.0], dtype=np.float32)
    response = prediction_stub.Predict(predict_request(model, {"x": x}), timeout=30)
    assert tf.make_ndarray(response.outputs["y"]).ravel().tolist() == [expected]


def test_predict_tensor_content_input_and_shapes_not_checked(prediction_stub: Stub) -> None:
    # Declared [-1,1], fed [2,2]: TF Serving does not check declared shapes.
    x = tf.make_tensor_proto(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32))
    assert x.tensor_content
    response = prediction_stub.Predict(predict_request("half_plus_two", {"x": x}), timeout=30)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [[2.5, 3.0], [3.5, 4.0]]


def test_predict_by_version_and_signature(prediction_stub: Stub) -> None:
    request = predict_request(
        "two_versions", {"x": np.array([[4.0]], np.float32)}, version=123, signature_name="serving_default"
    )
    response = prediction_stub.Predict(request, timeout=30)
    assert response.model_spec.version.value == 123
    latest = prediction_stub.Predict(predict_request("two_versions", {"x": np.array([[4.0]], np.float32)}))
    assert latest.model_spec.version.value == 124


def test_predict_output_filter(prediction_stub: Stub) -> None:
    request = predict_request("half_plus_two", {"x": np.array([[1.0]], np.float32)})
    request.output_filter.append("y")
    assert list(prediction_stub.Predict(request).outputs) == ["y"]


def test_stateful_counter_runs_in_order(prediction_stub: Stub) -> None:
    prediction_stub.Predict(predict_request("counter", {}, signature_name="reset_counter"))
    for _ in range(3):
        prediction_stub.Predict(predict_request("counter", {}, signature_name="incr_counter"))
    response = prediction_stub.Predict(
        predict_request("counter", {"delta": np.float32(2.0)}, signature_name="incr_counter_by")
    )
    out = response.outputs["output"]
    assert out.float_val == [5.0]
    assert out.HasField("tensor_shape")  # scalar: shape present and empty
    assert len(out.tensor_shape.dim) == 0
    assert out.dtype == tf.float32.as_datatype_enum  # float_ref in the signature, float on the wire


@pytest.mark.parametrize(
    ("mutate", "code", "message"),
    [
        (lambda r: r.ClearField("model_spec"), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
        (lambda r: setattr(r.model_spec, "name", ""), grpc.StatusCode.INVALID_ARGUMENT,
         "ModelSpec has no name specified."),
        (lambda r: setattr(r.model_spec, "name", "nope"), grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Latest(nope)"),
        (lambda r: setattr(r.model_spec.version, "value", 999),
         grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(half_plus_two, 999)"),
        (lambda r: setattr(r.model_spec, "version_label", "stable"), grpc.StatusCode.INVALID_ARGUMENT,
         "Unrecognized servable version label: stable"),
        (lambda r: setattr(r.model_spec, "signature_name", "nope"), grpc.StatusCode.FAILED_PRECONDITION,
         'Serving signature key "nope" not found.'),
        (lambda r: r.inputs["extra"].CopyFrom(tf.make_tensor_proto([1.0])), grpc.StatusCode.INVALID_ARGUMENT,
         ("input size does not match signature: 2!=1 len({extra,x}) != len({x}). Sent extra: {extra}. "
          "Missing but required: {}.")),
        (lambda r: r.inputs["z"].CopyFrom(r.inputs.pop("x")), grpc.StatusCode.INVALID_ARGUMENT,
         ("Signature input alias: x(feed name: x:0) not found in request and no default value provided. "
          "Inputs expected to be in the request {z}, or default input alias set: ")),
        (lambda r: r.output_filter.append("z"), grpc.StatusCode.INVALID_ARGUMENT,
         "output tensor alias not found in signature: z Outputs expected to be in the set {y}."),
        (lambda r: r.output_filter.extend(["y", "y"]), grpc.StatusCode.INVALID_ARGUMENT,
         "duplicate output tensor alias: y"),
        (lambda r: r.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1]], np.int32))),
         grpc.StatusCode.INVALID_ARGUMENT, "Type mismatch"),
        (lambda r: r.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([b"a"], object))),
         grpc.StatusCode.INVALID_ARGUMENT, "Type mismatch"),
    ],
    ids=["no-spec", "empty-name", "unknown-model", "unknown-version", "unknown-label", "unknown-signature",
         "extra-input", "wrong-input-name", "bad-filter", "duplicate-filter", "wrong-dtype", "string-for-float"],
)
def test_predict_errors(prediction_stub: Stub, mutate: object, code: grpc.StatusCode, message: str) -> None:
    request = predict_request("half_plus_two", {"x": np.array([[1.0]], np.float32)})
    mutate(request)  # type: ignore[operator]
    error = rpc_error(lambda: prediction_stub.Predict(request, timeout=30))
    assert error.code() == code
    assert message in error.details()


@pytest.mark.parametrize(
    "tensor",
    [
        # tensor_content whose length does not match the shape
        {"dtype": 1, "tensor_shape": {"dim": [{"size": 3}]}, "tensor_content": b"\x00" * 5},
        # a shape claiming 10^12 elements: refused before any allocation
        {"dtype": 1, "tensor_shape": {"dim": [{"size": 10**6}, {"size": 10**6}]}, "float_val": [1.0]},
        # negative dimension
        {"dtype": 1, "tensor_shape": {"dim": [{"size": -1}]}, "float_val": [1.0]},
    ],
    ids=["bad-content-length", "huge-shape", "negative-dim"],
)
def test_malformed_tensor_is_invalid_argument(prediction_stub: Stub, tensor: dict[str, object]) -> None:
    from google.protobuf import json_format

    proto = json_format.ParseDict(
        {k: (v if k != "tensor_content" else __import__("base64").b64encode(v).decode())
         for k, v in tensor.items()}, tensor_pb2.TensorProto()
    )
    request = predict_request("half_plus_two", {"x": proto})
    error = rpc_error(lambda: prediction_stub.Predict(request, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "tensor parsing error: x"
    # and the server still serves
    ok = prediction_stub.Predict(predict_request("half_plus_two", {"x": np.array([[2.0]], np.float32)}))
    assert ok.outputs["y"].float_val == [3.0]


def signature_defs(directory: str) -> dict[str, object]:
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((testdata(directory) / "00000123" / "saved_model.pb").read_bytes())
    return dict(saved_model.meta_graphs[0].signature_def)


def test_get_model_metadata(prediction_stub: Stub) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "half_plus_two"
    response = prediction_stub.GetModelMetadata(request, timeout=30)
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.version.value == 123
    assert not response.model_spec.signature_name
    any_msg = response.metadata["signature_def"]
    assert any_msg.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert any_msg.Unpack(signature_map)
    assert dict(signature_map.signature_def) == signature_defs("saved_model_half_plus_two_cpu")


@pytest.mark.parametrize(
    ("fields", "name", "code", "message"),
    [
        ([], "half_plus_two", grpc.StatusCode.INVALID_ARGUMENT,
         "GetModelMetadataRequest must specify at least one metadata_field"),
        (["signature_def", "foo"], "half_plus_two", grpc.StatusCode.INVALID_ARGUMENT,
         "Metadata field foo is not supported"),
        (["signature_def"], "nope", grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    ],
)
def test_get_model_metadata_errors(
    prediction_stub: Stub, fields: list[str], name: str, code: grpc.StatusCode, message: str
) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
    request.model_spec.name = name
    error = rpc_error(lambda: prediction_stub.GetModelMetadata(request, timeout=30))
    assert error.code() == code
    assert error.details() == message


def test_get_model_status(model_stub: model_service_pb2_grpc.ModelServiceStub) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "two_versions"
    response = model_stub.GetModelStatus(request, timeout=30)
    versions = [(s.version, s.state, s.status.error_code) for s in response.model_version_status]
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert versions == [(124, available, 0), (123, available, 0)]  # highest first
    request.model_spec.version.value = 123
    [only] = model_stub.GetModelStatus(request, timeout=30).model_version_status
    assert only.version == 123


@pytest.mark.parametrize(
    ("name", "version", "message"),
    [("nope", None, "Could not find any versions of model nope"),
     ("half_plus_two", 7, "Could not find version 7 of model half_plus_two")],
)
def test_get_model_status_not_found(
    model_stub: model_service_pb2_grpc.ModelServiceStub, name: str, version: int | None, message: str
) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    error = rpc_error(lambda: model_stub.GetModelStatus(request, timeout=30))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == message
