"""aspired-client and the official client in one process (issue 14): the client's private messages do not
clash with TensorFlow's, and it builds byte-identical requests and reads every answer the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aspired_client
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from aspired_client import _ops, make_ndarray, make_tensor_proto, tensors
from aspired_client._pb.tensorflow_serving.apis import get_model_metadata_pb2 as client_metadata_pb2
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    regression_pb2,
)

from svc.wire import tensor_proto
from tests.client.drive import samples

SAMPLES = samples()


def official_predict(inputs: dict[str, Any], signature: str = "s") -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.model_spec.signature_name = signature
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    data: bytes = request.SerializeToString(deterministic=True)
    return data


def ours(inputs: dict[str, Any], signature: str = "s") -> bytes:
    data: bytes = _ops.predict_request("m", inputs, signature=signature).SerializeToString(deterministic=True)
    return data


def test_both_message_sets_live_in_one_process() -> None:
    ours_type = aspired_client._pb.tensorflow_serving.apis.predict_pb2.PredictRequest  # type: ignore[attr-defined]
    assert ours_type.DESCRIPTOR.full_name == "aspired_client._pb.tensorflow.serving.PredictRequest"
    assert predict_pb2.PredictRequest.DESCRIPTOR.full_name == "tensorflow.serving.PredictRequest"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_predict_request_is_byte_identical(name: str) -> None:
    value = SAMPLES[name]
    assert ours({"x": value}) == official_predict({"x": value})


@pytest.mark.parametrize(
    "value",
    [
        [[1.0, 2.0], [3.0, 4.0]],  # python floats: float32, as tf.make_tensor_proto
        [1, 2, 3],  # python ints: int32
        [2**40, 1],  # int64 when they do not fit
        3.5,
        7,
        True,
        [b"a", b"bc"],
        ["x", "\u00e9"],
        np.array(["x", "yz"]),  # numpy unicode
        np.zeros((0, 3), np.float32),
        np.float32(2.5),
        np.arange(6, dtype=np.float64).reshape(2, 3).T,  # not C-contiguous
        np.array([[1.0, -2.5, 3e38]], dtype=ml_dtypes.bfloat16),
        np.array([1.0], dtype=ml_dtypes.bfloat16),
    ],
    ids=repr,
)
def test_python_values_are_converted_like_tensorflow(value: Any) -> None:
    assert ours({"x": value, "y": value}) == official_predict({"x": value, "y": value})


def test_big_endian_arrays_are_sent_little_endian() -> None:
    # (tf.make_tensor_proto copies a big-endian array's bytes as they are, a wrong tensor; not compared)
    value = np.array([1.5, -2.0, 3.0], dtype=">f4")
    proto = make_tensor_proto(value)
    assert proto.tensor_content == value.astype("<f4").tobytes()
    np.testing.assert_array_equal(make_ndarray(proto), value)


def test_bfloat16_from_floats_rounds_like_ml_dtypes() -> None:
    values = np.array([1.0, 1.00390625, 1.01171875, -3.3, 65504.0, np.inf, -np.inf], np.float32)
    built = make_tensor_proto(values, dtype="bfloat16")
    assert (
        built.SerializeToString()
        == tf.make_tensor_proto(values.astype(ml_dtypes.bfloat16)).SerializeToString()
    )
    assert np.isnan(make_ndarray(make_tensor_proto(np.array([np.nan, 1.0], np.float32), dtype="bfloat16"))[0])


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_answers_read_like_tf_make_ndarray(name: str) -> None:
    value = SAMPLES[name]
    for proto in (tf.make_tensor_proto(value), _typed(value)):
        client_proto = tensors.TensorProto.FromString(proto.SerializeToString())
        got = make_ndarray(client_proto)
        expected = tf.make_ndarray(proto)
        assert got.shape == expected.shape
        assert got.dtype == expected.dtype or (got.dtype == object and expected.dtype == object)
        np.testing.assert_array_equal(got, expected)


_TYPED_FIELD = {
    "float32": "float_val", "float64": "double_val", "int32": "int_val", "int16": "int_val", "int8": "int_val",
    "uint8": "int_val", "int64": "int64_val", "uint32": "uint32_val", "uint64": "uint64_val",
}  # fmt: skip


def _typed(value: np.ndarray) -> Any:
    """The typed-field form TF Serving answers with by default (Tensor::AsProtoField)."""
    proto = tf.make_tensor_proto(value)
    if not proto.tensor_content:
        return proto
    proto.tensor_content = b""
    if value.dtype == np.float16:
        proto.half_val.extend(value.view(np.uint16).ravel().tolist())
    else:
        getattr(proto, _TYPED_FIELD[value.dtype.name]).extend(value.ravel().tolist())
    return proto


def test_a_short_typed_field_repeats_its_last_value() -> None:
    proto = tf.make_tensor_proto(np.float32(3.0))
    proto.tensor_shape.dim.add().size = 4
    got = make_ndarray(tensors.TensorProto.FromString(proto.SerializeToString()))
    np.testing.assert_array_equal(got, tf.make_ndarray(proto))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_server_answers_in_either_form_are_read(name: str) -> None:
    # what the server writes by default (typed fields) and with --enable_serialization_as_tensor_content,
    # strings there in TF's varint-framed layout
    value = SAMPLES[name]
    if name.startswith("bfloat16"):
        value = value.astype(ml_dtypes.bfloat16)
    for as_content in (False, True):
        proto = tensor_proto.from_ndarray(value, as_content=as_content)
        if as_content and value.size > 1:
            assert proto.tensor_content
        got = make_ndarray(tensors.TensorProto.FromString(proto.SerializeToString()))
        np.testing.assert_array_equal(got, value.astype(np.float32) if name.startswith("bfloat16") else value)


def example(**features: Any) -> tf.train.Example:
    feature = {}
    for key, value in features.items():
        if isinstance(value, float):
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        elif isinstance(value, int):
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        else:
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


@pytest.mark.parametrize("method", ["classify", "regress"])
def test_example_requests_are_byte_identical(method: str) -> None:
    examples = [{"x": 1.5, "n": 3, "s": b"q"}, {"x": 2.0}]
    context = {"c": "ctx"}
    official_type = (
        classification_pb2.ClassificationRequest if method == "classify" else regression_pb2.RegressionRequest
    )
    official = official_type()
    official.model_spec.name = "m"
    official.model_spec.version.value = 3
    official.model_spec.signature_name = "sig"
    official.input.example_list_with_context.examples.extend([example(x=1.5, n=3, s=b"q"), example(x=2.0)])
    official.input.example_list_with_context.context.CopyFrom(example(c=b"ctx"))
    operation = getattr(_ops, method)("grpc", "m", examples, context, 3, None, "sig")
    call = next(operation)
    assert call.path == f"/tensorflow.serving.PredictionService/{method.capitalize()}"
    assert call.request.SerializeToString(deterministic=True) == official.SerializeToString(
        deterministic=True
    )


def test_metadata_any_is_decoded_by_its_type_url() -> None:
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    signature_map.signature_def["serving_default"].method_name = "tensorflow/serving/predict"
    info = signature_map.signature_def["serving_default"].inputs["x"]
    info.name, info.dtype = "x:0", tf.float32.as_datatype_enum
    info.tensor_shape.dim.add().size = -1
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = "m"
    response.model_spec.version.value = 7
    packed = any_pb2.Any()
    packed.Pack(signature_map)
    response.metadata["signature_def"].CopyFrom(packed)
    assert packed.type_url == _ops.SIGNATURE_DEF_MAP_URL

    operation = _ops.get_metadata("grpc", "m", None, None)
    call = next(operation)
    assert call.path == "/tensorflow.serving.PredictionService/GetModelMetadata"
    with pytest.raises(StopIteration) as done:
        operation.send(client_metadata_pb2.GetModelMetadataResponse.FromString(response.SerializeToString()))
    metadata = done.value.value
    assert (metadata.name, metadata.version) == ("m", 7)
    spec = metadata.signatures["serving_default"].inputs["x"]
    assert (spec.name, spec.dtype, spec.shape) == ("x:0", "DT_FLOAT", (-1,))


def test_tfrecord_framing_is_tensorflows(tmp_path: Path) -> None:
    from aspired_client import tfrecord

    assert tfrecord.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    records = [b"", b"x", b"hello" * 1000]
    path = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    assert path.read_bytes() == b"".join(tfrecord.encode_record(r) for r in records)
    assert list(tfrecord.read_records(path)) == records
    corrupt = tmp_path / "corrupt.tfrecord"
    corrupt.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(tfrecord.CorruptRecordError, match="corrupted record data"):
        list(tfrecord.read_records(corrupt))
