"""TensorProto <-> numpy conversion for every dtype TensorFlow can feed.

Mirrors `tensorflow/core/framework/tensor.cc`: `to_ndarray` is `Tensor::FromProto` (raw `tensor_content`,
varint-framed string content, or the typed `*_val` field with TF's fill rule), `from_ndarray` is
`Tensor::AsProtoField` / `Tensor::AsProtoTensorContent`; `dtype_name` is `DataTypeString` (`types.cc`).
Pure functions over numpy, ml_dtypes and TF's generated protobuf classes; no TensorFlow op runs here
(importing `tensorflow.core.framework` does execute the `tensorflow` package's `__init__`, though).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from tensorflow.core.framework import tensor_pb2, types_pb2

from svc.types import DTYPE_NAMES, INT64_MAX, MAX_ELEMENTS, NUMPY_DTYPES, Array


class TensorConversionError(ValueError):
    """A TensorProto or an array that has no tensor form; the message is the reason, for humans."""


_MAX_DIMS = 254  # TensorShape::MaxDimensions()
_REF_OFFSET = 100  # kDataTypeRefOffset: DT_FLOAT_REF == DT_FLOAT + 100

_DATA_TYPE: dict[np.dtype[Any], int] = {v: k for k, v in NUMPY_DTYPES.items() if k != types_pb2.DT_STRING}


@dataclass(frozen=True)
class _Field:
    """Where AsProtoField puts a dtype (`ProtoHelper<T>` in tensor.cc).

    `wire` is the proto field's element type. `carrier`, when set, is the integer type whose bits the
    tensor holds (half_val keeps bit patterns; a quantized type is a record around one): values are
    cast to it, wrapping like the C++ `static_cast`, then reinterpreted. Without a carrier values are
    cast straight to the tensor's type (the sub-byte ints wrap there). `tag` is set for packed fields
    whose wire bytes are the array's raw little-endian bytes, so `from_ndarray` appends them with one
    parse instead of element by element.
    """

    name: str
    wire: np.dtype[Any]
    carrier: np.dtype[Any] | None = None
    tag: bytes = b""


def _ints(carrier: type[np.generic] | None = None) -> _Field:
    return _Field("int_val", np.dtype(np.int32), None if carrier is None else np.dtype(carrier))


_FLOAT8 = _Field("float8_val", np.dtype(np.uint8))
_FIELDS: dict[int, _Field] = {
    types_pb2.DT_FLOAT: _Field("float_val", np.dtype("<f4"), tag=b"\x2a"),
    types_pb2.DT_DOUBLE: _Field("double_val", np.dtype("<f8"), tag=b"\x32"),
    types_pb2.DT_COMPLEX64: _Field("scomplex_val", np.dtype("<f4"), tag=b"\x4a"),
    types_pb2.DT_COMPLEX128: _Field("dcomplex_val", np.dtype("<f8"), tag=b"\x62"),
    types_pb2.DT_BOOL: _Field("bool_val", np.dtype(np.bool_), tag=b"\x5a"),  # 0/1 are one-byte varints
    types_pb2.DT_INT64: _Field("int64_val", np.dtype(np.int64)),
    types_pb2.DT_UINT32: _Field("uint32_val", np.dtype(np.uint32)),
    types_pb2.DT_UINT64: _Field("uint64_val", np.dtype(np.uint64)),
    types_pb2.DT_STRING: _Field("string_val", np.dtype(object)),
    types_pb2.DT_HALF: _Field("half_val", np.dtype(np.int32), np.dtype(np.uint16)),
    types_pb2.DT_BFLOAT16: _Field("half_val", np.dtype(np.int32), np.dtype(np.uint16)),
    types_pb2.DT_INT32: _ints(),
    types_pb2.DT_UINT8: _ints(),
    types_pb2.DT_INT16: _ints(),
    types_pb2.DT_INT8: _ints(),
    types_pb2.DT_UINT16: _ints(),
    types_pb2.DT_QINT8: _ints(np.int8),
    types_pb2.DT_QUINT8: _ints(np.uint8),
    types_pb2.DT_QINT16: _ints(np.int16),
    types_pb2.DT_QUINT16: _ints(np.uint16),
    types_pb2.DT_QINT32: _ints(np.int32),
    types_pb2.DT_INT4: _ints(),
    types_pb2.DT_UINT4: _ints(),
    types_pb2.DT_INT2: _ints(),
    types_pb2.DT_UINT2: _ints(),
    types_pb2.DT_FLOAT8_E5M2: _FLOAT8,
    types_pb2.DT_FLOAT8_E4M3FN: _FLOAT8,
    types_pb2.DT_FLOAT8_E4M3FNUZ: _FLOAT8,
    types_pb2.DT_FLOAT8_E4M3B11FNUZ: _FLOAT8,
    types_pb2.DT_FLOAT8_E5M2FNUZ: _FLOAT8,
    types_pb2.DT_FLOAT4_E2M1FN: _FLOAT8,
}
_COMPLEX = frozenset({types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128})


def dtype_name(dtype: int) -> str:
    """TF's `DataTypeString`: `float`, `int32`, `half`, `float_ref`, `unknown dtype enum (99)`."""
    if dtype > _REF_OFFSET:
        return _base_name(dtype - _REF_OFFSET) + "_ref"
    return _base_name(dtype)


def _base_name(dtype: int) -> str:
    return DTYPE_NAMES.get(dtype, f"unknown dtype enum ({dtype})")


def numpy_dtype(dtype: int) -> np.dtype[Any]:
    """The numpy dtype that feeds TF a tensor of `dtype`; DT_STRING is `object` (elements are bytes)."""
    try:
        return NUMPY_DTYPES[dtype]
    except KeyError:
        raise TensorConversionError(f"unsupported tensor dtype: {dtype_name(dtype)}") from None


def data_type_of(array: npt.NDArray[Any]) -> int:
    """The DataType of a numpy array; object, bytes and str arrays are DT_STRING."""
    dtype = array.dtype
    if dtype.kind in "OSU":
        return int(types_pb2.DT_STRING)
    if dtype.byteorder not in "=|":
        dtype = dtype.newbyteorder("=")
    try:
        return _DATA_TYPE[dtype]
    except KeyError:
        raise TensorConversionError(f"numpy dtype {dtype} has no TensorFlow DataType") from None


def to_ndarray(proto: tensor_pb2.TensorProto, *, max_elements: int = MAX_ELEMENTS) -> npt.NDArray[Any]:
    """The array TF's `Tensor::FromProto` builds from `proto` (writable; strings as an object array of bytes).

    The element count comes from the shape alone and is checked against `max_elements` before
    anything is allocated. Typed fields follow TF: no values -> zeros, fewer values than elements ->
    the last value repeats, more values -> the extra ones are ignored; integers wrap like a C cast.
    """
    shape, count = _shape(proto.tensor_shape)
    if count > max_elements:
        raise TensorConversionError(f"tensor has {count} elements, more than the limit of {max_elements}")
    dtype = proto.dtype
    target = numpy_dtype(dtype)
    if count == 0:
        try:
            return np.empty(shape, target)
        except ValueError:  # numpy refuses dimensions whose product, the zero aside, overflows
            raise TensorConversionError(f"tensor shape {list(shape)} has no numpy form") from None
    content = proto.tensor_content
    if dtype == types_pb2.DT_STRING:
        items = _decode_string_list(content, count) if content else list(proto.string_val[:count])
        flat = _fill(_object_array(items), count, b"")
    elif content:
        flat = _from_content(content, target, count)
    else:
        flat = _fill(_field_values(proto, dtype, target), count, 0)
    return flat.reshape(shape)


def from_ndarray(
    array: npt.NDArray[Any], dtype: int | None = None, *, as_content: bool = False
) -> tensor_pb2.TensorProto:
    """A TensorProto of `array` as TF's `AsProtoField` writes it, or `AsProtoTensorContent` if `as_content`.

    `dtype` defaults to `data_type_of(array)`; another dtype casts the array first. Strings may be
    bytes or str (encoded as UTF-8); with `as_content` they are varint-framed in `tensor_content`.
    """
    array = np.asarray(array)
    data_type = data_type_of(array) if dtype is None else dtype
    target = numpy_dtype(data_type)
    proto = tensor_pb2.TensorProto(dtype=data_type)
    proto.tensor_shape.SetInParent()  # a scalar's shape is present and empty
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    if array.size == 0:
        return proto
    if data_type == types_pb2.DT_STRING:
        items = _string_items(array)
        if as_content:
            proto.tensor_content = _encode_string_list(items)
        else:
            proto.string_val.extend(items)
        return proto
    array = _cast(array, target)
    if as_content:
        proto.tensor_content = array.tobytes()
    else:
        _write_field(proto, data_type, array)
    return proto


def _shape(shape_proto: Any) -> tuple[tuple[int, ...], int]:
    """Dims and element count, valid as `TensorShape::IsValid` sees it (`unknown_rank` is ignored, as in TF)."""
    dims = tuple(dim.size for dim in shape_proto.dim)
    if len(dims) > _MAX_DIMS:
        raise TensorConversionError(f"tensor shape has {len(dims)} dimensions, more than {_MAX_DIMS}")
    count = 1
    for size in dims:
        if size < 0:
            raise TensorConversionError(f"tensor shape {list(dims)} has an unknown or negative dimension")
        count *= size
        if count > INT64_MAX:
            raise TensorConversionError(f"tensor shape {list(dims)} has too many elements")
    return dims, count


def _from_content(content: bytes, target: np.dtype[Any], count: int) -> Array:
    expected = count * target.itemsize
    if len(content) != expected:
        raise TensorConversionError(
            f"tensor_content has {len(content)} bytes, expected {expected} for {count} elements"
        )
    return np.frombuffer(content, target.newbyteorder("<"), count).astype(target)


def _field_values(proto: tensor_pb2.TensorProto, dtype: int, target: np.dtype[Any]) -> Array:
    """The typed field's values as elements of `target`, however many there are."""
    field = _FIELDS[dtype]
    raw = getattr(proto, field.name)
    if field is _FLOAT8:
        return np.frombuffer(raw, np.uint8).view(target).copy()
    values = np.array(raw, field.wire)
    if dtype in _COMPLEX:  # pairs (real, imag); an odd trailing value is ignored
        return values[: len(values) // 2 * 2].view(target)
    if field.carrier is None:
        return values.astype(target, copy=False)
    return values.astype(field.carrier).view(target)


def _fill(values: Array, count: int, zero: Any) -> Array:
    """`FromProtoField`: take `count` values, repeat the last one if short, `zero` if there are none."""
    have = len(values)
    if have >= count:
        return values[:count]
    out = np.empty(count, values.dtype)
    if have == 0:
        out[:] = zero
    else:
        out[:have] = values
        out[have:] = values[-1]
    return out


def _cast(array: Array, target: np.dtype[Any]) -> Array:
    """`array` as contiguous little-endian `target`."""
    little = target.newbyteorder("<")
    if array.dtype == little and array.flags.c_contiguous:
        return array
    try:
        return np.ascontiguousarray(array.astype(little))
    except (TypeError, ValueError) as exc:
        raise TensorConversionError(f"cannot convert a {array.dtype} array to {target}: {exc}") from None


def _write_field(proto: tensor_pb2.TensorProto, dtype: int, array: Array) -> None:
    field = _FIELDS[dtype]
    if field.tag:
        raw = array.view(np.uint8).astype(np.bool_) if dtype == types_pb2.DT_BOOL else array
        data = raw.tobytes()
        proto.MergeFromString(field.tag + _varint(len(data)) + data)  # one packed record: a memcpy in upb
    elif field is _FLOAT8:
        proto.float8_val = array.tobytes()
    else:
        bits = array if field.carrier is None else array.view(field.carrier)
        getattr(proto, field.name).extend(bits.astype(field.wire).ravel().tolist())


def _string_items(array: Array) -> list[bytes]:
    return [_as_bytes(item) for item in array.ravel().tolist()]


def _as_bytes(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    raise TensorConversionError(f"string tensor element {item!r} is neither bytes nor str")


def _object_array(items: list[bytes]) -> Array:
    out = np.empty(len(items), object)
    out[:] = items
    return out


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_string_list(items: list[bytes]) -> bytes:
    """`port::EncodeStringList`: every length as a varint32, then every string."""
    return b"".join([_varint(len(item)) for item in items] + items)


def _decode_string_list(content: bytes, count: int) -> list[bytes]:
    """`port::DecodeStringList`: `count` varint32 lengths, then exactly that many bytes of strings."""
    if len(content) < count:  # every length takes at least a byte: reject before the loop
        raise TensorConversionError(
            f"string tensor_content of {len(content)} bytes cannot hold {count} strings"
        )
    sizes = []
    pos = 0
    for _ in range(count):
        size, pos = _read_varint32(content, pos)
        sizes.append(size)
    if sum(sizes) != len(content) - pos:
        raise TensorConversionError("string tensor_content lengths do not add up to its size")
    bounds = itertools.accumulate(sizes, initial=pos)
    return [content[start:end] for start, end in itertools.pairwise(bounds)]


def _read_varint32(data: bytes, pos: int) -> tuple[int, int]:
    """`core::GetVarint32`: at most five bytes, the value kept to 32 bits."""
    value = 0
    for shift in range(0, 35, 7):
        if pos >= len(data):
            break
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & 0xFFFFFFFF, pos
    raise TensorConversionError("string tensor_content has a malformed length")
