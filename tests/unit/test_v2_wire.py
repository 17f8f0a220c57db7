"""Open Inference Protocol codecs (issue 12): datatypes, raw/typed/JSON tensors, the binary tensor data
extension, gRPC messages, and the repository index — pure functions, tables."""

from __future__ import annotations

import json
import struct
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2

from svc._proto.inference import grpc_service_pb2 as pb
from svc.errors import Code, ServingError
from svc.inference import open_inference as v2
from svc.inference.core import Target
from svc.lifecycle.state_monitor import VersionStatus
from svc.lifecycle.states import State
from svc.wire import v2_request, v2_tensor

PAIRS = [
    (types_pb2.DT_FLOAT, "FP32"), (types_pb2.DT_DOUBLE, "FP64"), (types_pb2.DT_HALF, "FP16"),
    (types_pb2.DT_BFLOAT16, "BF16"), (types_pb2.DT_STRING, "BYTES"), (types_pb2.DT_BOOL, "BOOL"),
    (types_pb2.DT_INT8, "INT8"), (types_pb2.DT_INT16, "INT16"), (types_pb2.DT_INT32, "INT32"),
    (types_pb2.DT_INT64, "INT64"), (types_pb2.DT_UINT8, "UINT8"), (types_pb2.DT_UINT16, "UINT16"),
    (types_pb2.DT_UINT32, "UINT32"), (types_pb2.DT_UINT64, "UINT64"),
]


def error_of(call: Any, *args: Any) -> ServingError:
    with pytest.raises(ServingError) as info:
        call(*args)
    return info.value


@pytest.mark.parametrize(("tf_dtype", "datatype"), PAIRS)
def test_datatype_map_is_one_to_one(tf_dtype: int, datatype: str) -> None:
    assert v2_tensor.datatype_of(tf_dtype, "t") == datatype
    assert v2_tensor.datatype_of(tf_dtype + 100, "t") == datatype  # reference dtypes are their base
    assert v2_tensor.TF_DTYPE[datatype] == tf_dtype


@pytest.mark.parametrize(
    "tf_dtype", [types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128, types_pb2.DT_QINT8, types_pb2.DT_RESOURCE,
                 types_pb2.DT_VARIANT, types_pb2.DT_FLOAT8_E5M2, types_pb2.DT_INT4]
)
def test_dtypes_without_a_v2_name_are_refused_clearly(tf_dtype: int) -> None:
    error = error_of(v2_tensor.datatype_of, tf_dtype, "images")
    assert error.code is Code.INVALID_ARGUMENT
    assert "'images'" in error.message
    assert types_pb2.DataType.Name(tf_dtype) in error.message
    assert "no Open Inference Protocol datatype" in error.message


SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False, True]]),
    "UINT8": np.array([[0, 7, 255]], np.uint8),
    "UINT16": np.array([[0, 7, 65535]], np.uint16),
    "UINT32": np.array([[0, 7, 2**32 - 1]], np.uint32),
    "UINT64": np.array([[0, 7, 2**64 - 1]], np.uint64),
    "INT8": np.array([[-128, 0, 127]], np.int8),
    "INT16": np.array([[-32768, 0, 1]], np.int16),
    "INT32": np.array([[-(2**31), 0, 1]], np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1]], np.int64),
    "FP16": np.array([[0.5, -2.0, 65504.0]], np.float16),
    "FP32": np.array([[0.1, -2.5, 3.0e38]], np.float32),
    "FP64": np.array([[0.1, -2.5, 1e300]], np.float64),
    "BF16": np.array([[0.5, -2.0, 1.0]], ml_dtypes.bfloat16),
}


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_raw_round_trip(datatype: str) -> None:
    array = SAMPLES[datatype]
    raw = v2_tensor.to_raw(array, datatype)
    assert raw == array.astype(array.dtype.newbyteorder("<")).tobytes()
    back = v2_tensor.from_raw("t", datatype, [1, 3], raw)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("datatype", sorted(set(SAMPLES) - {"FP16", "BF16"}))
def test_typed_contents_round_trip(datatype: str) -> None:
    contents = pb.InferTensorContents()
    v2_tensor.fill_contents(contents, SAMPLES[datatype], datatype)
    back = v2_tensor.from_contents("t", datatype, [1, 3], contents)
    np.testing.assert_array_equal(back, SAMPLES[datatype])


@pytest.mark.parametrize("datatype", sorted(set(SAMPLES) - {"BF16"}))
def test_json_round_trip_flat_and_nested(datatype: str) -> None:
    array = SAMPLES[datatype]
    data = json.loads(json.dumps(v2_tensor.to_json(array, datatype)))
    np.testing.assert_array_equal(v2_tensor.from_json("t", datatype, [1, 3], data), array)
    np.testing.assert_array_equal(v2_tensor.from_json("t", datatype, [1, 3], [data]), array)  # nested like shape


def test_bytes_tensors() -> None:
    items = [b"a", b"", b"\xff\x00", "été".encode()]
    raw = b"".join(struct.pack("<I", len(i)) + i for i in items)
    array = v2_tensor.from_raw("s", "BYTES", [2, 2], raw)
    assert array.shape == (2, 2)
    assert array.ravel().tolist() == items
    assert v2_tensor.to_raw(array, "BYTES") == raw
    assert v2_tensor.to_json(array, "BYTES") == ["a", "", "\ufffd\x00", "été"]
    assert v2_tensor.from_json("s", "BYTES", [2], ["x", "é"]).tolist() == [b"x", "é".encode()]


@pytest.mark.parametrize(
    ("call", "args", "text"),
    [
        (v2_tensor.from_raw, ("in0", "FP32", [2, 2], b"\0" * 12), "12 bytes"),
        (v2_tensor.from_raw, ("in0", "FP32", [2, -1], b""), "negative"),
        (v2_tensor.from_raw, ("in0", "FP33", [1], b"\0" * 4), "unknown datatype"),
        (v2_tensor.from_raw, ("in0", "BYTES", [2], struct.pack("<I", 1) + b"a"), "1 BYTES elements"),
        (v2_tensor.from_raw, ("in0", "BYTES", [1], struct.pack("<I", 9) + b"a"), "runs past"),
        (v2_tensor.from_raw, ("in0", "BYTES", [1], b"\1\0"), "length"),
        (v2_tensor.from_raw, ("in0", "FP32", [2**20, 2**20], b""), "more than"),
        (v2_tensor.from_json, ("in0", "FP32", [3], [1.0, 2.0]), "2 elements"),
        (v2_tensor.from_json, ("in0", "FP32", [2], [1.0, "2"]), "numbers"),
        (v2_tensor.from_json, ("in0", "INT32", [2], [1, 2.5]), "integers"),
        (v2_tensor.from_json, ("in0", "INT8", [1], [300]), "out of range"),
        (v2_tensor.from_json, ("in0", "BOOL", [1], [1]), "true or false"),
        (v2_tensor.from_json, ("in0", "BYTES", [1], [1]), "strings"),
        (v2_tensor.from_json, ("in0", "FP32", [1], [{"b64": "AA=="}]), "object"),
        (v2_tensor.from_contents, ("in0", "FP16", [1], pb.InferTensorContents()), "raw_input_contents"),
        (v2_tensor.from_contents, ("in0", "FP32", [2], pb.InferTensorContents(fp32_contents=[1])), "1 elements"),
        (v2_tensor.from_contents, ("in0", "FP32", [1], pb.InferTensorContents(int_contents=[1])), "int_contents"),
        (v2_tensor.from_contents, ("in0", "INT8", [1], pb.InferTensorContents(int_contents=[999])), "range"),
    ],
)
def test_mismatches_name_the_tensor(call: Any, args: tuple[Any, ...], text: str) -> None:
    error = error_of(call, *args)
    assert error.code is Code.INVALID_ARGUMENT
    assert "'in0'" in error.message
    assert text in error.message


def binary_body(doc: dict[str, Any], *chunks: bytes) -> tuple[bytes, int]:
    header = json.dumps(doc).encode()
    return header + b"".join(chunks), len(header)


def test_json_request_with_binary_inputs_and_parameters() -> None:
    a = np.arange(4, dtype=np.float32)
    doc = {
        "id": "42",
        "parameters": {"signature_name": "sig", "binary_data_output": True},
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": 16}},
            {"name": "b", "datatype": "INT64", "shape": [2], "data": [[1], [2]]},
            {"name": "c", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 7}},
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
    }
    body, length = binary_body(doc, a.tobytes(), struct.pack("<I", 3) + b"abc")
    request = v2_request.parse_json_request(body, length, "m", "2")
    assert (request.model_name, request.model_version, request.id) == ("m", "2", "42")
    assert request.parameters == {"signature_name": "sig", "binary_data_output": True}
    assert [i.name for i in request.inputs] == ["a", "b", "c"]
    np.testing.assert_array_equal(request.inputs[0].array, a.reshape(2, 2))
    assert request.inputs[1].array.tolist() == [1, 2]
    assert request.inputs[2].array.tolist() == [b"abc"]
    assert request.outputs == (v2_request.RequestedOutput("y", False), v2_request.RequestedOutput("z", None))

    response = v2_request.InferResponse("m", "2", "42", (
        v2_request.InferOutput("y", "FP32", np.array([1.5], np.float32)),
        v2_request.InferOutput("z", "INT32", np.array([[7, 8]], np.int32)),
    ))
    text, header_length = v2_request.format_json_response(response, request)
    assert header_length is not None
    head = json.loads(text[:header_length])
    assert head == {
        "model_name": "m", "model_version": "2", "id": "42",
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [1], "data": [1.5]},
            {"name": "z", "datatype": "INT32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
        ],
    }
    assert text[header_length:] == np.array([7, 8], "<i4").tobytes()


@pytest.mark.parametrize(
    ("doc", "chunks", "header", "text"),
    [
        ({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}]},
         (b"\0" * 6,), True, "2 bytes of binary data are not claimed"),
        ({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1]}]}, (), False, "no data"),
        ({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1],
                      "parameters": {"binary_data_size": 4}}]}, (b"\0" * 4,), True, "both"),
        ({"inputs": [{"name": "a", "datatype": "FP32", "shape": "1", "data": [1]}]}, (), False, "shape"),
        ({"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}, (), False, "'name'"),
        ({"inputs": [], "outputs": [{"name": "y", "parameters": {"classification": 2}}]}, (), False,
         "classification"),
        ({"inputs": [], "id": 5}, (), False, "'id'"),
        ({"inputs": [], "parameters": []}, (), False, "parameters"),
    ],
)
def test_json_request_errors(doc: dict[str, Any], chunks: tuple[bytes, ...], header: bool, text: str) -> None:
    body, length = binary_body(doc, *chunks)
    error = error_of(v2_request.parse_json_request, body, length if header else None, "m", "")
    assert error.code is Code.INVALID_ARGUMENT
    assert text in error.message


def test_grpc_request_raw_and_typed_and_response_mirrors_it() -> None:
    raw = pb.ModelInferRequest(model_name="m", model_version="3", id="i", raw_input_contents=[b"\0\0\x80?"])
    raw.inputs.add(name="x", datatype="FP32", shape=[1])
    raw.parameters["signature_name"].string_param = "s"
    raw.parameters["timeout"].int64_param = 5
    parsed = v2_request.parse_grpc_request(raw)
    assert parsed.raw
    assert parsed.parameters == {"signature_name": "s", "timeout": 5}
    assert parsed.inputs[0].array.tolist() == [1.0]

    typed = pb.ModelInferRequest(model_name="m")
    typed.inputs.add(name="x", datatype="INT64", shape=[2]).contents.int64_contents.extend([1, 2])
    assert not v2_request.parse_grpc_request(typed).raw

    response = v2_request.InferResponse("m", "3", "i", (
        v2_request.InferOutput("y", "FP32", np.array([2.0], np.float32)),
        v2_request.InferOutput("h", "FP16", np.array([1.0], np.float16)),
    ))
    as_raw = v2_request.grpc_response(response, raw=True)
    assert list(as_raw.raw_output_contents) == [b"\0\0\0@", np.float16(1).tobytes()]
    # FP16 has no typed field: raw contents are all or nothing, so every output goes raw
    assert len(v2_request.grpc_response(response, raw=False).raw_output_contents) == 2
    typed_only = v2_request.InferResponse("m", "3", "", response.outputs[:1])
    as_typed = v2_request.grpc_response(typed_only, raw=False)
    assert list(as_typed.outputs[0].contents.fp32_contents) == [2.0]
    assert not as_typed.raw_output_contents


def test_grpc_request_errors() -> None:
    both = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\0" * 4])
    both.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(1)
    assert "'x'" in error_of(v2_request.parse_grpc_request, both).message
    count = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"", b""])
    count.inputs.add(name="x", datatype="FP32", shape=[0])
    assert "one per input" in error_of(v2_request.parse_grpc_request, count).message


@pytest.mark.parametrize(
    ("version", "target"),
    [("", Target("m")), ("7", Target("m", version=7)), ("stable", Target("m", label="stable")),
     ("\u0661", Target("m", label="\u0661"))],  # non-ASCII digits are a label, not a version
)
def test_version_or_label(version: str, target: Target) -> None:
    assert v2.target_of("m", version) == target


def test_repository_index_states() -> None:
    table = {
        "a": {1: VersionStatus(State.END), 2: VersionStatus(State.AVAILABLE)},
        "b": {3: VersionStatus(State.END, Code.NOT_FOUND, "no SavedModel")},
        "c": {4: VersionStatus(State.LOADING)},
    }
    entries = v2.repository_index(["a", "b", "c", "d", "e"], {"e"}, table, ready_only=False)
    assert [(e.name, e.version, e.state, e.reason) for e in entries] == [
        ("a", "1", "UNAVAILABLE", "unloaded"), ("a", "2", "READY", ""),
        ("b", "3", "UNAVAILABLE", "no SavedModel"), ("c", "4", "LOADING", ""),
        ("d", "", "UNAVAILABLE", "no version loaded yet"), ("e", "", "UNAVAILABLE", "unloaded"),
    ]
    assert [(e.name, e.version) for e in v2.repository_index(["a", "b", "d"], set(), table, True)] == [("a", "2")]


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_json_response_data(datatype: str) -> None:
    request = v2_request.InferRequest("m", "", "", {}, ())
    array = SAMPLES[datatype]
    response = v2_request.InferResponse("m", "1", "", (v2_request.InferOutput("y", datatype, array),))
    text, header_length = v2_request.format_json_response(response, request)
    assert header_length is None
    (output,) = json.loads(text)["outputs"]
    assert output["shape"] == [1, 3]
    expected = array.astype(np.float32) if datatype in ("FP16", "BF16") else array
    # float32 is written in its shortest form (0.1, not 0.10000000149011612): the same float32 when read
    assert np.array(output["data"], expected.dtype).tolist() == expected.ravel().tolist()


def test_json_response_nan_is_null() -> None:
    request = v2_request.InferRequest("m", "", "", {}, ())
    array = np.array([np.nan, 1.0, np.inf], np.float32)
    response = v2_request.InferResponse("m", "1", "", (v2_request.InferOutput("y", "FP32", array),))
    text, _ = v2_request.format_json_response(response, request)
    assert json.loads(text)["outputs"][0]["data"] == [None, 1.0, None]  # strict JSON has no NaN
