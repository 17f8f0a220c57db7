"""svc.wire.tensor_proto against TensorFlow itself.

The reference for reading a TensorProto is TF's C++ `Tensor::FromProto`, reached through
`tf.io.parse_tensor` (TF Serving calls the same function on every Predict input). `tf.make_tensor_proto`
and `tf.make_ndarray` (Python) are checked where they agree with it.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tensorflow.core.framework import tensor_pb2, types_pb2

from svc.types import MAX_ELEMENTS
from svc.wire.tensor_proto import (
    TensorConversionError,
    data_type_of,
    dtype_name,
    from_ndarray,
    numpy_dtype,
    to_ndarray,
)

Array = npt.NDArray[Any]
D = types_pb2


def _quantized(dtype: int, values: list[int]) -> Array:
    target = numpy_dtype(dtype)
    return np.array(values, target.fields[target.names[0]][0]).view(target)  # type: ignore[index]


# Two rows of three interesting values for every dtype TF can feed.
SAMPLES: dict[int, Array] = {
    D.DT_FLOAT: np.array([0.0, -0.0, 1.5, np.nan, np.inf, 1e-45], np.float32),
    D.DT_DOUBLE: np.array([0.0, -0.0, 1.5, np.nan, -np.inf, 5e-324], np.float64),
    D.DT_INT32: np.array([0, 1, -1, 2**31 - 1, -(2**31), 7], np.int32),
    D.DT_UINT8: np.array([0, 1, 127, 128, 255, 7], np.uint8),
    D.DT_INT16: np.array([0, -1, 32767, -32768, 5, 6], np.int16),
    D.DT_INT8: np.array([0, -1, 127, -128, 5, 6], np.int8),
    D.DT_UINT16: np.array([0, 1, 65535, 32768, 5, 6], np.uint16),
    D.DT_INT64: np.array([0, -1, 2**63 - 1, -(2**63), 5, 6], np.int64),
    D.DT_UINT32: np.array([0, 1, 2**32 - 1, 2**31, 5, 6], np.uint32),
    D.DT_UINT64: np.array([0, 1, 2**64 - 1, 2**63, 5, 6], np.uint64),
    D.DT_BOOL: np.array([True, False, True, True, False, False]),
    D.DT_COMPLEX64: np.array([1 + 2j, -0.0 - 1j, complex(np.nan, 1), np.inf, 0, 3.5j], np.complex64),
    D.DT_COMPLEX128: np.array([1 + 2j, -0.0 - 1j, complex(np.nan, 1), np.inf, 0, 3.5j], np.complex128),
    D.DT_HALF: np.array([0.0, -0.0, 1.5, np.nan, np.inf, 65504], np.float16),
    D.DT_BFLOAT16: np.array([0.0, -0.0, 1.5, np.nan, np.inf, 3e38], ml_dtypes.bfloat16),
    D.DT_STRING: np.array([b"", b"a", b"\x00\xff", b"x" * 200, "caf\u00e9".encode(), b"plain"], object),
    D.DT_QINT8: _quantized(D.DT_QINT8, [0, -1, 127, -128, 5, 6]),
    D.DT_QUINT8: _quantized(D.DT_QUINT8, [0, 1, 255, 128, 5, 6]),
    D.DT_QINT16: _quantized(D.DT_QINT16, [0, -1, 32767, -32768, 5, 6]),
    D.DT_QUINT16: _quantized(D.DT_QUINT16, [0, 1, 65535, 32768, 5, 6]),
    D.DT_QINT32: _quantized(D.DT_QINT32, [0, -1, 2**31 - 1, -(2**31), 5, 6]),
    D.DT_FLOAT8_E5M2: np.array([0, -0.0, 1.5, -2, 0.5, 57344], ml_dtypes.float8_e5m2),
    D.DT_FLOAT8_E4M3FN: np.array([0, -0.0, 1.5, -2, 0.5, 448], ml_dtypes.float8_e4m3fn),
    D.DT_FLOAT8_E4M3FNUZ: np.array([0, 1, 1.5, -2, 0.5, 240], ml_dtypes.float8_e4m3fnuz),
    D.DT_FLOAT8_E4M3B11FNUZ: np.array([0, 1, 1.5, -2, 0.5, 30], ml_dtypes.float8_e4m3b11fnuz),
    D.DT_FLOAT8_E5M2FNUZ: np.array([0, 1, 1.5, -2, 0.5, 57344], ml_dtypes.float8_e5m2fnuz),
    D.DT_INT4: np.array([-8, -1, 0, 1, 7, 3], ml_dtypes.int4),
    D.DT_UINT4: np.array([0, 1, 15, 8, 2, 3], ml_dtypes.uint4),
    D.DT_INT2: np.array([-2, -1, 0, 1, 1, 0], ml_dtypes.int2),
    D.DT_UINT2: np.array([0, 1, 2, 3, 0, 1], ml_dtypes.uint2),
    D.DT_FLOAT4_E2M1FN: np.array([0, -0.0, 1.5, -6, 0.5, 4], ml_dtypes.float4_e2m1fn),
}
FEEDABLE = sorted(SAMPLES)
STANDARD = [d for d in FEEDABLE if d <= D.DT_UINT64]  # the dtypes tf.make_tensor_proto / make_ndarray know
QUANTIZED = [D.DT_QINT8, D.DT_QUINT8, D.DT_QINT16, D.DT_QUINT16, D.DT_QINT32]

# AsProtoField's field per dtype (ProtoHelper<T> in tensor.cc).
TYPED_FIELD = {
    **dict.fromkeys([D.DT_INT32, D.DT_UINT8, D.DT_INT16, D.DT_INT8, D.DT_UINT16], "int_val"),
    **dict.fromkeys([D.DT_QINT8, D.DT_QUINT8, D.DT_QINT16, D.DT_QUINT16, D.DT_QINT32], "int_val"),
    **dict.fromkeys([D.DT_INT4, D.DT_UINT4, D.DT_INT2, D.DT_UINT2], "int_val"),
    **dict.fromkeys([D.DT_HALF, D.DT_BFLOAT16], "half_val"),
    **dict.fromkeys(range(D.DT_FLOAT8_E5M2, D.DT_FLOAT8_E5M2FNUZ + 1), "float8_val"),
    D.DT_FLOAT4_E2M1FN: "float8_val",
    D.DT_FLOAT: "float_val",
    D.DT_DOUBLE: "double_val",
    D.DT_STRING: "string_val",
    D.DT_COMPLEX64: "scomplex_val",
    D.DT_COMPLEX128: "dcomplex_val",
    D.DT_INT64: "int64_val",
    D.DT_BOOL: "bool_val",
    D.DT_UINT32: "uint32_val",
    D.DT_UINT64: "uint64_val",
}


def sample(dtype: int, shape: tuple[int, ...] = (2, 3)) -> Array:
    return SAMPLES[dtype].reshape(shape)


def tf_parse(proto: Any) -> Array:
    """What TF's C++ Tensor::FromProto makes of `proto` (raises InvalidArgumentError where it fails)."""
    out_type = tf.dtypes.as_dtype(proto.dtype) if proto.dtype != D.DT_INVALID else tf.float32
    tensor: Array = np.asarray(tf.io.parse_tensor(proto.SerializeToString(), out_type).numpy())
    if out_type == tf.string:  # a scalar comes back as bare bytes
        return np.asarray(tensor, object)
    if out_type.is_quantized:  # EagerTensor.numpy() drops the record TF's quantized numpy dtypes wrap
        return tensor.view(out_type.as_numpy_dtype)
    return tensor


def bits(array: Array) -> tuple[Any, ...]:
    """Everything that makes two arrays the same tensor: dtype, shape and each element's value bits."""
    if array.dtype == object:
        return (array.dtype, array.shape, array.tolist())
    if array.dtype in (
        np.dtype(t) for t in (ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2, ml_dtypes.uint2)
    ):
        # ml_dtypes keeps sub-byte ints in a byte; TF may leave the int8 it copied from int_val there.
        return (array.dtype, array.shape, array.astype(np.int8).tobytes())
    return (array.dtype, array.shape, np.ascontiguousarray(array).tobytes())


def make_proto(dtype: int, dims: list[int], **fields: Any) -> Any:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    proto.tensor_shape.SetInParent()
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    for name, value in fields.items():
        if isinstance(value, bytes):
            setattr(proto, name, value)
        else:
            getattr(proto, name).extend(value)
    return proto


# ---- dtype tables ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "name"),
    [
        (D.DT_INVALID, "INVALID"),
        (D.DT_FLOAT, "float"),
        (D.DT_DOUBLE, "double"),
        (D.DT_HALF, "half"),
        (D.DT_BFLOAT16, "bfloat16"),
        (D.DT_STRING, "string"),
        (D.DT_RESOURCE, "resource"),
        (D.DT_VARIANT, "variant"),
        (D.DT_UINT64, "uint64"),
        (D.DT_FLOAT_REF, "float_ref"),
        (D.DT_HALF_REF, "half_ref"),
        (99, "unknown dtype enum (99)"),
        (200, "unknown dtype enum (100)_ref"),
    ],
)
def test_dtype_name(dtype: int, name: str) -> None:
    assert dtype_name(dtype) == name


@pytest.mark.parametrize("dtype", [d for d in D.DataType.values() if 0 < d < 100])
def test_dtype_name_is_tfs_data_type_string(dtype: int) -> None:
    # ParseTensor names both types with DataTypeString when they differ.
    other = D.DT_DOUBLE if dtype == D.DT_FLOAT else D.DT_FLOAT
    proto = make_proto(dtype, [0])
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        tf.io.parse_tensor(proto.SerializeToString(), tf.dtypes.as_dtype(other))
    assert f"parsed tensor ({dtype_name(dtype)}) and dtype ({dtype_name(other)})" in caught.value.message


@pytest.mark.parametrize("dtype", FEEDABLE)
def test_numpy_dtype_is_tfs(dtype: int) -> None:
    expected = (
        np.dtype(object) if dtype == D.DT_STRING else np.dtype(tf.dtypes.as_dtype(dtype).as_numpy_dtype)
    )
    assert numpy_dtype(dtype) == expected
    assert numpy_dtype(D.DT_BFLOAT16) == tf.bfloat16.as_numpy_dtype


@pytest.mark.parametrize("dtype", [D.DT_INVALID, D.DT_RESOURCE, D.DT_VARIANT, D.DT_FLOAT_REF, 99, -1])
def test_numpy_dtype_rejects_what_cannot_be_fed(dtype: int) -> None:
    with pytest.raises(TensorConversionError, match="unsupported tensor dtype"):
        numpy_dtype(dtype)


@pytest.mark.parametrize("dtype", FEEDABLE)
def test_data_type_of_inverts_numpy_dtype(dtype: int) -> None:
    assert data_type_of(np.empty(0, numpy_dtype(dtype))) == dtype


@pytest.mark.parametrize(
    ("array", "dtype"),
    [
        (np.array([b"a"]), D.DT_STRING),
        (np.array(["a"]), D.DT_STRING),
        (np.array([1], object), D.DT_STRING),
        (np.array([1.0], ">f4"), D.DT_FLOAT),
        (np.array([1], ">i8"), D.DT_INT64),
        (np.array([1], np.intc), D.DT_INT32),
        (np.array([1], np.longlong), D.DT_INT64),
    ],
)
def test_data_type_of(array: Array, dtype: int) -> None:
    assert data_type_of(array) == dtype


@pytest.mark.parametrize(
    "array", [np.array([1], np.longdouble), np.array(["2020-01-01"], "datetime64[D]"), np.zeros(1, "V4")]
)
def test_data_type_of_rejects_dtypes_tf_lacks(array: Array) -> None:
    with pytest.raises(TensorConversionError):
        data_type_of(array)


# ---- from_ndarray ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FEEDABLE)
def test_from_ndarray_typed_fields_as_as_proto_field(dtype: int) -> None:
    array = sample(dtype)
    proto = from_ndarray(array)
    assert proto.dtype == dtype
    assert [d.size for d in proto.tensor_shape.dim] == [2, 3]
    assert [f.name for f, _ in proto.ListFields()] == ["dtype", "tensor_shape", TYPED_FIELD[dtype]]
    assert bits(tf_parse(proto)) == bits(array)


def serialized(value: Any) -> Any:
    """TF's SerializeTensor: AsProtoTensorContent, except strings, which it writes with AsProtoField."""
    return tensor_pb2.TensorProto.FromString(tf.io.serialize_tensor(value).numpy())


@pytest.mark.parametrize("dtype", [d for d in STANDARD if d not in QUANTIZED])
def test_from_ndarray_is_as_proto_tensor_content(dtype: int) -> None:
    array = sample(dtype)
    assert from_ndarray(array, as_content=dtype != D.DT_STRING) == serialized(array)


@pytest.mark.parametrize("dtype", QUANTIZED)  # SerializeTensor has no quantized kernels
def test_from_ndarray_quantized_content_is_make_tensor_proto(dtype: int) -> None:
    assert from_ndarray(sample(dtype), as_content=True) == tf.make_tensor_proto(sample(dtype))


@pytest.mark.parametrize("dtype", FEEDABLE)
def test_from_ndarray_content_parses_in_tf(dtype: int) -> None:
    array = sample(dtype)
    proto = from_ndarray(array, as_content=True)
    assert [f.name for f, _ in proto.ListFields()] == ["dtype", "tensor_shape", "tensor_content"]
    assert bits(tf_parse(proto)) == bits(array)


def test_from_ndarray_string_content_is_varint_framed() -> None:
    # AsProtoTensorContent encodes strings with port::EncodeStringList: all lengths, then all bytes.
    proto = from_ndarray(np.array([b"ab", b"", b"x" * 130], object), as_content=True)
    assert proto.tensor_content == b"\x02\x00\x82\x01" + b"ab" + b"x" * 130


def test_from_ndarray_typed_values_as_tf_writes_them() -> None:
    half = from_ndarray(np.array([1.0, -2.0], np.float16))
    assert list(half.half_val) == [0x3C00, 0xC000]  # unsigned bit patterns
    bf16 = from_ndarray(np.array([1.0, -2.0], ml_dtypes.bfloat16))
    assert list(bf16.half_val) == [0x3F80, 0xC000]
    assert list(from_ndarray(np.array([1 + 2j, 3 - 4j], np.complex64)).scomplex_val) == [1, 2, 3, -4]
    assert list(from_ndarray(np.array([255, 0], np.uint8)).int_val) == [255, 0]
    assert list(from_ndarray(np.array([-8, 7], ml_dtypes.int4)).int_val) == [-8, 7]
    assert list(from_ndarray(_quantized(D.DT_QUINT16, [65535])).int_val) == [65535]
    assert from_ndarray(np.array([1.5, -2], ml_dtypes.float8_e4m3fn)).float8_val == b"\x3c\xc0"


@pytest.mark.parametrize("as_content", [False, True])
def test_from_ndarray_scalar_has_a_present_empty_shape(as_content: bool) -> None:
    proto = from_ndarray(np.float32(2.5), as_content=as_content)  # type: ignore[arg-type]
    assert proto.HasField("tensor_shape")
    assert len(proto.tensor_shape.dim) == 0
    assert tf_parse(proto) == np.float32(2.5)
    string = from_ndarray(np.array(b"xyz", object), as_content=as_content)
    assert string.HasField("tensor_shape")
    assert to_ndarray(string) == tf_parse(string) == b"xyz"


def test_from_ndarray_scalars_are_tfs() -> None:
    assert from_ndarray(np.float32(2.5), as_content=True) == serialized(np.float32(2.5))  # type: ignore[arg-type]
    assert from_ndarray(np.array(b"xyz", object)) == serialized(b"xyz")


@pytest.mark.parametrize("as_content", [False, True])
@pytest.mark.parametrize("dtype", FEEDABLE)
def test_empty_tensor_round_trips(dtype: int, as_content: bool) -> None:
    array = np.empty((0, 3), numpy_dtype(dtype))
    proto = from_ndarray(array, as_content=as_content)
    assert [f.name for f, _ in proto.ListFields()] == ["dtype", "tensor_shape"]
    assert [d.size for d in proto.tensor_shape.dim] == [0, 3]
    assert bits(to_ndarray(proto)) == bits(array)
    assert bits(tf_parse(proto)) == bits(array)


def test_from_ndarray_strings_accept_bytes_and_str() -> None:
    proto = from_ndarray(np.array([b"a", "\u00e9", np.bytes_(b"c"), np.str_("d")], object))
    assert list(proto.string_val) == [b"a", b"\xc3\xa9", b"c", b"d"]
    assert list(from_ndarray(np.array(["x", "yz"])).string_val) == [b"x", b"yz"]
    assert list(from_ndarray(np.array([b"x", b"yz"])).string_val) == [b"x", b"yz"]


def test_from_ndarray_casts_to_a_requested_dtype() -> None:
    proto = from_ndarray(np.array([1.5, 2.5]), D.DT_FLOAT)
    assert proto.dtype == D.DT_FLOAT
    assert list(proto.float_val) == [1.5, 2.5]
    assert list(from_ndarray(np.array([1, 2]), D.DT_HALF).half_val) == [0x3C00, 0x4000]
    quantized = from_ndarray(np.array([[1, -2]], np.int8), D.DT_QINT8)
    assert (quantized.dtype, list(quantized.int_val)) == (D.DT_QINT8, [1, -2])


def test_from_ndarray_writes_little_endian_for_any_byte_order() -> None:
    array = np.array([[1.5, -2.0]], ">f8")
    assert from_ndarray(array, as_content=True).tensor_content == np.array([[1.5, -2.0]], "<f8").tobytes()
    assert list(from_ndarray(array).double_val) == [1.5, -2.0]
    assert bits(to_ndarray(from_ndarray(array[:, ::-1]))) == bits(np.array([[-2.0, 1.5]]))


@pytest.mark.parametrize(
    ("array", "dtype"),
    [
        (np.array([1, 2]), D.DT_STRING),
        (np.array([b"a", 3], object), None),
        (np.array([b"a"], object), D.DT_FLOAT),
        (np.array([1.0]), D.DT_RESOURCE),
        (np.array([1.0]), D.DT_INVALID),
        (np.array([1], np.longdouble), None),
    ],
)
def test_from_ndarray_rejects(array: Array, dtype: int | None) -> None:
    with pytest.raises(TensorConversionError):
        from_ndarray(array, dtype)


# ---- to_ndarray -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", STANDARD)
def test_to_ndarray_reads_make_tensor_proto_like_make_ndarray(dtype: int) -> None:
    array = sample(dtype)
    proto = tf.make_tensor_proto(array)
    assert bits(to_ndarray(proto)) == bits(tf.make_ndarray(proto)) == bits(array)


@pytest.mark.parametrize("dtype", STANDARD)
def test_to_ndarray_reads_typed_fields_like_make_ndarray(dtype: int) -> None:
    proto = from_ndarray(sample(dtype))
    assert bits(to_ndarray(proto)) == bits(tf.make_ndarray(proto))


@pytest.mark.parametrize("as_content", [False, True])
@pytest.mark.parametrize("dtype", FEEDABLE)
def test_to_ndarray_is_tf_from_proto(dtype: int, as_content: bool) -> None:
    proto = from_ndarray(sample(dtype), as_content=as_content)
    result = to_ndarray(proto)
    assert bits(result) == bits(tf_parse(proto)) == bits(sample(dtype))
    assert result.flags.writeable


# TF's FromProtoField: too few values -> the last one repeats (a single value fills the tensor), none ->
# zeros, too many -> the extra ones are ignored. Integers wrap like a C cast.
FILL_CASES = [
    ("pad with last", D.DT_FLOAT, [5], {"float_val": [1, 2]}, [1, 2, 2, 2, 2]),
    ("broadcast one", D.DT_FLOAT, [2, 3], {"float_val": [7]}, [7] * 6),
    ("empty is zeros", D.DT_FLOAT, [3], {}, [0, 0, 0]),
    ("too many truncated", D.DT_FLOAT, [2], {"float_val": [1, 2, 3]}, [1, 2]),
    ("scalar takes first", D.DT_DOUBLE, [], {"double_val": [4, 5]}, 4),
    ("zero elements ignore values", D.DT_FLOAT, [0, 3], {"float_val": [1]}, np.zeros((0, 3))),
    ("uint8 wraps", D.DT_UINT8, [3], {"int_val": [300, -1, 255]}, [44, 255, 255]),
    ("int8 wraps", D.DT_INT8, [2], {"int_val": [300, -129]}, [44, 127]),
    ("uint16 wraps", D.DT_UINT16, [2], {"int_val": [-1, 70000]}, [65535, 4464]),
    ("qint8 wraps", D.DT_QINT8, [2], {"int_val": [1, 300]}, None),
    ("int4 from int_val", D.DT_INT4, [4], {"int_val": [1, -1, 7]}, [1, -1, 7, 7]),
    ("uint2 wraps", D.DT_UINT2, [3], {"int_val": [5, 3]}, [1, 3, 3]),
    ("half_val keeps low 16 bits", D.DT_HALF, [2], {"half_val": [0x3C00, 0x73C00]}, [1, 1]),
    ("bfloat16 from half_val", D.DT_BFLOAT16, [3], {"half_val": [0x3F80]}, [1, 1, 1]),
    ("bfloat16 ignores int_val", D.DT_BFLOAT16, [2], {"int_val": [0x3F80]}, [0, 0]),
    ("float ignores other fields", D.DT_FLOAT, [2], {"double_val": [1.0]}, [0, 0]),
    ("complex pairs pad", D.DT_COMPLEX64, [3], {"scomplex_val": [1, 2, 3, 4]}, [1 + 2j, 3 + 4j, 3 + 4j]),
    ("complex odd tail ignored", D.DT_COMPLEX128, [2], {"dcomplex_val": [1, 2, 3]}, [1 + 2j, 1 + 2j]),
    ("complex single value is none", D.DT_COMPLEX64, [2], {"scomplex_val": [1]}, [0, 0]),
    ("bool broadcast", D.DT_BOOL, [3], {"bool_val": [True]}, [True] * 3),
    ("string pad", D.DT_STRING, [3], {"string_val": [b"a", b"b"]}, [b"a", b"b", b"b"]),
    ("string empty", D.DT_STRING, [2], {}, [b"", b""]),
    ("uint64 max", D.DT_UINT64, [2], {"uint64_val": [2**64 - 1]}, [2**64 - 1] * 2),
    ("float8 from bytes", D.DT_FLOAT8_E5M2, [3], {"float8_val": b"\x3c\x40"}, [1, 2, 2]),
    ("content wins over fields", D.DT_FLOAT, [2], {"tensor_content": b"\0" * 8, "float_val": [5]}, [0, 0]),
    ("string content", D.DT_STRING, [2], {"tensor_content": b"\x02\x01abc"}, [b"ab", b"c"]),
    ("string content long", D.DT_STRING, [1], {"tensor_content": b"\x80\x01" + b"z" * 128}, [b"z" * 128]),
]


@pytest.mark.parametrize(
    ("dtype", "dims", "fields", "expected"), [c[1:] for c in FILL_CASES], ids=[c[0] for c in FILL_CASES]
)
def test_to_ndarray_fill_rule_is_tfs(
    dtype: int, dims: list[int], fields: dict[str, Any], expected: Any
) -> None:
    proto = make_proto(dtype, dims, **fields)
    result = to_ndarray(proto)
    assert bits(result) == bits(tf_parse(proto))
    if expected is not None:
        assert bits(result) == bits(np.asarray(expected, numpy_dtype(dtype)).reshape(dims))


def test_unknown_rank_is_ignored_as_tf_does() -> None:
    # TensorShape::IsValid lets a TensorShape be built from an unknown-rank proto: the flag is ignored.
    proto = make_proto(D.DT_FLOAT, [2], float_val=[1.5])
    proto.tensor_shape.unknown_rank = True
    assert bits(to_ndarray(proto)) == bits(tf_parse(proto)) == bits(np.array([1.5, 1.5], np.float32))


def _huge_shape(proto: Any) -> Any:
    proto.tensor_shape.dim.add(size=10**6)
    proto.tensor_shape.dim.add(size=10**6)
    return proto


# (id, proto, message, whether TF's FromProto rejects it too)
ERROR_CASES = [
    ("content too short", make_proto(D.DT_FLOAT, [2], tensor_content=b"\0" * 7), "7 bytes, expected 8", True),
    ("content too long", make_proto(D.DT_INT64, [1], tensor_content=b"\0" * 9), "9 bytes, expected 8", True),
    ("negative dim", make_proto(D.DT_FLOAT, [-1, 2]), "negative dimension", True),
    ("unknown dim", make_proto(D.DT_STRING, [-1]), "negative dimension", True),
    ("too many dims", make_proto(D.DT_FLOAT, [1] * 255), "255 dimensions", True),
    ("int64 overflow", make_proto(D.DT_FLOAT, [2**62, 4, 0]), "too many elements", True),
    ("invalid dtype", make_proto(D.DT_INVALID, [1], float_val=[1]), "INVALID", True),
    ("string content trailing", make_proto(D.DT_STRING, [2], tensor_content=b"\x02\x01abcd"), "add up", True),
    ("string content short", make_proto(D.DT_STRING, [2], tensor_content=b"\x02\x01ab"), "add up", True),
    ("string content few lengths", make_proto(D.DT_STRING, [3], tensor_content=b"\0\0"), "cannot hold", True),
    ("string length unended", make_proto(D.DT_STRING, [1], tensor_content=b"\xff\xff"), "malformed", True),
    (
        "string length 6 bytes",
        make_proto(D.DT_STRING, [1], tensor_content=b"\x80" * 5 + b"\0"),
        "malformed",
        True,
    ),
    # TF builds these, but a numpy array cannot hold them and no servable takes them as input.
    ("resource", make_proto(D.DT_RESOURCE, [0]), "resource", False),
    ("variant", make_proto(D.DT_VARIANT, [1]), "variant", False),
    ("ref dtype", make_proto(D.DT_FLOAT_REF, [1], float_val=[1]), "float_ref", False),
    ("unknown dtype", make_proto(99, [1]), "unknown dtype enum", False),
]


@pytest.mark.parametrize(
    ("proto", "message", "tf_rejects"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_to_ndarray_rejects(proto: Any, message: str, tf_rejects: bool) -> None:
    with pytest.raises(TensorConversionError, match=message):
        to_ndarray(proto)
    if tf_rejects:
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf_parse(proto)


@pytest.mark.parametrize(
    "fields", [{}, {"float_val": [1.0]}, {"tensor_content": b"\0" * 4}, {"string_val": [b"a"]}]
)
def test_huge_element_count_is_rejected_without_allocating(fields: dict[str, Any]) -> None:
    dtype = D.DT_STRING if "string_val" in fields else D.DT_FLOAT
    proto = _huge_shape(make_proto(dtype, [], **fields))  # 10**12 elements
    tracemalloc.start()  # numpy reports its buffers to tracemalloc: a measure of memory, not of time (issue 9)
    try:
        with pytest.raises(TensorConversionError, match="more than the limit of 134217728"):
            to_ndarray(proto)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_max_elements_is_a_bound_the_caller_chooses() -> None:
    proto = make_proto(D.DT_FLOAT, [2, 5], float_val=[1.0])
    assert to_ndarray(proto, max_elements=10).shape == (2, 5)
    with pytest.raises(TensorConversionError, match="10 elements, more than the limit of 9"):
        to_ndarray(proto, max_elements=9)
    assert MAX_ELEMENTS == 2**27  # the request limit: svc/types.py (issue 9: one limit, defined once)


# ---- properties -----------------------------------------------------------------------------------------

_SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
_SUB_BYTE_MASK = {D.DT_INT4: 0xF, D.DT_UINT4: 0xF, D.DT_FLOAT4_E2M1FN: 0xF, D.DT_INT2: 0x3, D.DT_UINT2: 0x3}


@st.composite
def feedable_arrays(draw: st.DrawFn) -> Array:
    """Any bit pattern of any feedable dtype (NaN payloads, subnormals, extremes)."""
    dtype = draw(st.sampled_from(FEEDABLE))
    shape = draw(_SHAPES)
    if dtype == D.DT_STRING:
        return draw(hnp.arrays(object, shape, elements=st.binary(max_size=200) | st.text(max_size=20)))
    if dtype == D.DT_BOOL:
        return draw(hnp.arrays(np.bool_, shape))
    target = numpy_dtype(dtype)
    raw = draw(hnp.arrays(np.uint8, (*shape, target.itemsize)))
    raw &= _SUB_BYTE_MASK.get(dtype, 0xFF)
    return raw.view(target).reshape(shape)


def _expected(array: Array) -> Array:
    if array.dtype != object:
        return array
    encoded = [item.encode() if isinstance(item, str) else item for item in array.ravel().tolist()]
    out = np.empty(len(encoded), object)
    out[:] = encoded
    return out.reshape(array.shape)


@settings(max_examples=300, deadline=None)
@given(array=feedable_arrays(), as_content=st.booleans())
def test_property_round_trip_is_bit_exact_and_tf_agrees(array: Array, as_content: bool) -> None:
    proto = from_ndarray(array, as_content=as_content)
    assert bits(to_ndarray(proto)) == bits(_expected(array))
    assert bits(tf_parse(proto)) == bits(_expected(array))


@settings(max_examples=200, deadline=None)
@given(
    dims=st.lists(st.integers(0, 4), max_size=3),
    values=st.lists(st.integers(-(2**31), 2**31 - 1), max_size=30),
    dtype=st.sampled_from(
        [D.DT_INT32, D.DT_UINT8, D.DT_INT8, D.DT_INT16, D.DT_UINT16, D.DT_QUINT8, D.DT_INT4]
    ),
)
def test_property_typed_field_reading_is_tfs(dims: list[int], values: list[int], dtype: int) -> None:
    proto = make_proto(dtype, dims, int_val=values)
    assert bits(to_ndarray(proto)) == bits(tf_parse(proto))


def test_zero_elements_with_huge_dimensions_are_refused_as_a_client_error() -> None:
    # Issue 9: found by tests/e2e/test_fuzz.py (INTERNAL: numpy's "array is too big" escaped).
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64)
    for size in (2, 518159, 10000000, 0, 1809730):
        proto.tensor_shape.dim.add(size=size)
    with pytest.raises(TensorConversionError, match="has no numpy form"):
        to_ndarray(proto)
