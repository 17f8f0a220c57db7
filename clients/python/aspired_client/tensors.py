"""numpy <-> TensorProto, without TensorFlow.

`make_tensor_proto(array)` builds exactly what `tf.make_tensor_proto(array)` builds for the same numpy array
(so a request is byte-identical to one built with the official client): `tensor_content` (raw little-endian
bytes) for the numeric dtypes TF writes that way when the tensor has more than one element, the typed
`*_val` field otherwise (one element, strings, bool, complex, uint16). `make_ndarray(proto)` reads every
representation a server may answer with: `tensor_content` (strings in TF's varint-framed layout included)
or the typed field, with TF's rule that a shorter typed field repeats its last value.

bfloat16 needs `ml_dtypes` (TensorFlow's own numpy extension). It is not a dependency: without it a
bfloat16 output is returned as float32 (exactly: a bfloat16 is the upper half of a float32), and a
bfloat16 input is built with `make_tensor_proto(values, dtype="bfloat16")` from any float array.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import numpy.typing as npt

from aspired_client._pb.tensorflow.core.framework import tensor_pb2, types_pb2

TensorProto = tensor_pb2.TensorProto
Array = npt.NDArray[Any]

# DataType -> (numpy dtype, typed field); TF's `as_numpy_dtype` and `ProtoHelper<T>` (tensor.cc).
_TYPES: dict[int, tuple[np.dtype[Any], str]] = {
    types_pb2.DT_FLOAT: (np.dtype(np.float32), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype(np.float64), "double_val"),
    types_pb2.DT_INT32: (np.dtype(np.int32), "int_val"),
    types_pb2.DT_UINT8: (np.dtype(np.uint8), "int_val"),
    types_pb2.DT_INT16: (np.dtype(np.int16), "int_val"),
    types_pb2.DT_INT8: (np.dtype(np.int8), "int_val"),
    types_pb2.DT_UINT16: (np.dtype(np.uint16), "int_val"),
    types_pb2.DT_STRING: (np.dtype(object), "string_val"),
    types_pb2.DT_COMPLEX64: (np.dtype(np.complex64), "scomplex_val"),
    types_pb2.DT_COMPLEX128: (np.dtype(np.complex128), "dcomplex_val"),
    types_pb2.DT_INT64: (np.dtype(np.int64), "int64_val"),
    types_pb2.DT_BOOL: (np.dtype(np.bool_), "bool_val"),
    types_pb2.DT_HALF: (np.dtype(np.float16), "half_val"),
    types_pb2.DT_BFLOAT16: (np.dtype(np.float32), "half_val"),  # numpy has no bfloat16; see _bfloat16()
    types_pb2.DT_UINT32: (np.dtype(np.uint32), "uint32_val"),
    types_pb2.DT_UINT64: (np.dtype(np.uint64), "uint64_val"),
}
# The dtypes tf.make_tensor_proto writes as tensor_content (tensor_util._TENSOR_CONTENT_TYPES).
_CONTENT = frozenset(
    {
        types_pb2.DT_HALF, types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT32, types_pb2.DT_UINT8,
        types_pb2.DT_INT16, types_pb2.DT_INT8, types_pb2.DT_INT64, types_pb2.DT_UINT32, types_pb2.DT_UINT64,
        types_pb2.DT_BFLOAT16,
    }
)  # fmt: skip
_BY_NUMPY: dict[np.dtype[Any], int] = {
    dtype: data_type
    for data_type, (dtype, _) in _TYPES.items()
    if data_type not in (types_pb2.DT_STRING, types_pb2.DT_BFLOAT16)
}
_NAMES = {"float32": "float", "float64": "double", "float16": "half"}


class TensorError(ValueError):
    """An array that has no TensorProto form, or a TensorProto this client cannot read."""


def _bfloat16() -> np.dtype[Any] | None:
    if importlib.util.find_spec("ml_dtypes") is None:
        return None
    import ml_dtypes

    dtype: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
    return dtype


def data_type(dtype: npt.DTypeLike | str) -> int:
    """The DataType of a numpy dtype or of a TF dtype name (`float`, `DT_FLOAT`, `bfloat16`, `string`)."""
    if isinstance(dtype, str):
        name = dtype.lower().removeprefix("dt_")
        name = _NAMES.get(name, name)
        if name in ("string", "bytes", "str", "object"):
            return types_pb2.DT_STRING
        try:
            return int(types_pb2.DataType.Value(f"DT_{name.upper()}"))
        except ValueError:
            pass
    resolved = np.dtype(dtype)
    if resolved.kind in "OSU":
        return types_pb2.DT_STRING
    if resolved.name == "bfloat16":
        return types_pb2.DT_BFLOAT16
    try:
        return _BY_NUMPY[resolved.newbyteorder("=")]
    except KeyError:
        raise TensorError(f"no TensorFlow dtype for numpy dtype {resolved}") from None


def numpy_dtype(data_type: int) -> np.dtype[Any]:
    """The numpy dtype of a DataType's values (`object` for strings; bfloat16 see the module docstring)."""
    if data_type == types_pb2.DT_BFLOAT16:
        return _bfloat16() or np.dtype(np.float32)
    try:
        return _TYPES[data_type][0]
    except KeyError:
        raise TensorError(f"unsupported tensor dtype: {_type_name(data_type)}") from None


def _type_name(data_type: int) -> str:
    try:
        return str(types_pb2.DataType.Name(data_type))
    except ValueError:
        return f"DataType {data_type}"


def make_tensor_proto(values: Any, dtype: npt.DTypeLike | str | None = None) -> Any:
    """A TensorProto of `values` (an array or anything `np.asarray` takes), as `tf.make_tensor_proto` builds
    it; `dtype` (numpy dtype or TF name) converts the values first."""
    if isinstance(values, TensorProto):
        return values
    return fill_tensor_proto(TensorProto(), values, dtype)


def fill_tensor_proto(proto: Any, values: Any, dtype: npt.DTypeLike | str | None = None) -> Any:
    """`make_tensor_proto` written into an empty TensorProto `proto` (a map entry of a request: no copy)."""
    if isinstance(values, TensorProto):
        proto.CopyFrom(values)
        return proto
    target = None if dtype is None else data_type(dtype)
    if target == types_pb2.DT_STRING:
        array = np.asarray(values, dtype=object)
    elif target == types_pb2.DT_BFLOAT16:
        array = np.asarray(values)
    elif target is not None:
        array = np.asarray(values, dtype=numpy_dtype(target))
    else:
        array = np.asarray(values)
        if not isinstance(values, np.ndarray | np.generic):
            array = _python_default(array)
        target = data_type(array.dtype)
    proto.dtype = target
    shape = proto.tensor_shape
    shape.SetInParent()
    for size in array.shape:
        shape.dim.add().size = size
    if target in _CONTENT and array.size > 1:
        proto.tensor_content = _raw(array, target).tobytes()
        return proto
    flat = array.ravel()
    match target:
        case types_pb2.DT_STRING:
            proto.string_val.extend([_as_bytes(value) for value in flat])
        case types_pb2.DT_HALF | types_pb2.DT_BFLOAT16:
            proto.half_val.extend(_raw(flat, target).tolist())
        case types_pb2.DT_COMPLEX64 | types_pb2.DT_COMPLEX128:
            real = flat.astype(np.complex64 if target == types_pb2.DT_COMPLEX64 else np.complex128)
            getattr(proto, _TYPES[target][1]).extend(np.stack([real.real, real.imag], -1).ravel().tolist())
        case _:
            getattr(proto, _TYPES[target][1]).extend(flat.tolist())
    return proto


def _python_default(array: Array) -> Array:
    """TF's defaults for Python values: floats are float32, ints int32 when they fit."""
    if array.dtype == np.float64:
        return array.astype(np.float32)
    if array.dtype == np.int64:
        narrow = array.astype(np.int32)
        if np.array_equal(narrow, array):
            return narrow
    return array


def _raw(array: Array, target: int) -> Array:
    """The array in its wire form: little-endian; half and bfloat16 as their uint16 bit patterns."""
    if target == types_pb2.DT_BFLOAT16:
        if array.dtype.name == "bfloat16":
            return array.view(np.uint16).astype("<u2")
        bits = np.ascontiguousarray(array, dtype="<f4").view("<u4")
        rounded = bits + 0x7FFF + ((bits >> 16) & 1)  # round to nearest even, as ml_dtypes does
        rounded = np.where(np.isnan(array), bits | 0x400000, rounded)
        return (rounded >> 16).astype("<u2")
    if target == types_pb2.DT_HALF:
        return np.ascontiguousarray(array, dtype="<f2").view("<u2")
    dtype = _TYPES[target][0].newbyteorder("<")
    return np.ascontiguousarray(array, dtype=dtype)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, np.bytes_ | bytearray | memoryview):
        return bytes(value)
    raise TensorError(f"a string tensor holds bytes or str, not {type(value).__name__}")


def tensor_shape(proto: Any) -> tuple[int, ...]:
    return tuple(dim.size for dim in proto.tensor_shape.dim)


def make_ndarray(proto: Any) -> Array:
    """The numpy array of a TensorProto (strings are `object` arrays of bytes)."""
    shape = tensor_shape(proto)
    if any(size < 0 for size in shape):
        raise TensorError(f"tensor shape has an unknown dimension: {list(shape)}")
    count = int(np.prod(shape, dtype=np.int64))
    data_type = proto.dtype
    dtype = numpy_dtype(data_type)
    if proto.tensor_content:
        if data_type == types_pb2.DT_STRING:
            return _decode_string_content(proto.tensor_content, count).reshape(shape)
        if data_type in (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
            bits = np.frombuffer(proto.tensor_content, dtype="<u2")
            return _from_bits(bits, data_type, dtype)[:count].reshape(shape)
        wire = np.frombuffer(proto.tensor_content, dtype=dtype.newbyteorder("<"))
        if wire.size != count:
            raise TensorError(f"tensor_content holds {wire.size} values for shape {list(shape)}")
        return wire.astype(dtype).reshape(shape)
    field = _TYPES[data_type][1]
    values: Array
    if data_type == types_pb2.DT_STRING:
        values = np.empty(len(proto.string_val), dtype=object)
        values[:] = list(proto.string_val)
    elif data_type in (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
        values = _from_bits(np.array(proto.half_val, dtype=np.uint16), data_type, dtype)
    elif data_type in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
        parts = np.array(getattr(proto, field), dtype=np.float64).reshape(-1, 2)
        values = (parts[:, 0] + 1j * parts[:, 1]).astype(dtype)
    else:
        values = np.array(getattr(proto, field), dtype=dtype)
    return _fill(values, count, dtype).reshape(shape)


def _from_bits(bits: Array, data_type: int, dtype: np.dtype[Any]) -> Array:
    if data_type == types_pb2.DT_HALF:
        return bits.astype(np.uint16).view(np.float16)
    if dtype.name == "bfloat16":
        return bits.astype(np.uint16).view(dtype)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _fill(values: Array, count: int, dtype: np.dtype[Any]) -> Array:
    """TF's Tensor::FromProto: a typed field shorter than the tensor repeats its last value (zero if empty)."""
    if values.size == count:
        return values
    if values.size > count:
        raise TensorError(f"typed field holds {values.size} values for {count} elements")
    if values.size == 0:
        return np.full(count, b"" if dtype == object else 0, dtype=dtype)
    out = np.empty(count, dtype=dtype)
    out[: values.size] = values
    out[values.size :] = values[-1]
    return out


def _decode_string_content(content: bytes, count: int) -> Array:
    """TF's string tensor_content (port::EncodeStringList): `count` varint lengths, then the bytes."""
    lengths: list[int] = []
    position = 0
    for _ in range(count):
        length, shift = 0, 0
        while True:
            if position >= len(content):
                raise TensorError("truncated string tensor_content")
            byte = content[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        lengths.append(length)
    out = np.empty(count, dtype=object)
    for index, length in enumerate(lengths):
        out[index] = content[position : position + length]
        position += length
    if position != len(content):
        raise TensorError("string tensor_content has bytes after its last string")
    return out
