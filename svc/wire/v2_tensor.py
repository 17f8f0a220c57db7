"""Open Inference Protocol (KServe V2) tensors <-> numpy: datatypes, raw bytes, typed `contents`, JSON data.

Pure functions, no I/O. The protocol's tensor rules (KServe's `required_api.md`, Triton's
`binary_data.md`): a tensor is `name`, `datatype`, `shape` and its elements in row-major order, as typed
`InferTensorContents` fields, as `raw_*_contents` bytes (little-endian; a BYTES element is a 4-byte
little-endian length followed by its bytes), or as JSON `data` (flat or nested like the shape). Every
mismatch is an INVALID_ARGUMENT naming the tensor.

TF dtypes map one to one onto V2 datatypes (`DT_FLOAT` <-> `FP32`, `DT_STRING` <-> `BYTES`, ...); a TF dtype
without a V2 name (complex, quantized, float8, int4, resource, variant) is refused with an error saying so.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Sequence
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt
from tensorflow.core.framework import types_pb2

from svc.errors import invalid_argument

Array = npt.NDArray[Any]

MAX_ELEMENTS = 2**27  # a tensor claiming more is refused before anything is allocated (as TF Serving's path)

# TF DataType -> V2 datatype, and the numpy dtype of both.
DATATYPE: dict[int, str] = {
    types_pb2.DT_BOOL: "BOOL",
    types_pb2.DT_UINT8: "UINT8",
    types_pb2.DT_UINT16: "UINT16",
    types_pb2.DT_UINT32: "UINT32",
    types_pb2.DT_UINT64: "UINT64",
    types_pb2.DT_INT8: "INT8",
    types_pb2.DT_INT16: "INT16",
    types_pb2.DT_INT32: "INT32",
    types_pb2.DT_INT64: "INT64",
    types_pb2.DT_HALF: "FP16",
    types_pb2.DT_FLOAT: "FP32",
    types_pb2.DT_DOUBLE: "FP64",
    types_pb2.DT_BFLOAT16: "BF16",
    types_pb2.DT_STRING: "BYTES",
}
TF_DTYPE: dict[str, int] = {v: k for k, v in DATATYPE.items()}
NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "BYTES": np.dtype(object),
}
_LITTLE = {name: dt.newbyteorder("<") for name, dt in NUMPY.items() if name != "BYTES"}

# Which InferTensorContents field holds each datatype (FP16 and BF16 have none: raw only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_LENGTH = struct.Struct("<I")
_NATIVE_IS_LITTLE = sys.byteorder == "little"


def datatype_of(dtype: int, tensor: str) -> str:
    """The V2 datatype of a TF dtype (a reference dtype is its base); refused when there is none."""
    base = dtype - 100 if dtype > 100 else dtype
    name = DATATYPE.get(base)
    if name is None:
        tf_name = types_pb2.DataType.Name(base) if base in types_pb2.DataType.values() else str(base)
        raise invalid_argument(
            f"tensor '{tensor}' has TensorFlow dtype {tf_name}, which has no Open Inference Protocol datatype"
        )
    return name


def check_datatype(datatype: str, tensor: str) -> np.dtype[Any]:
    dtype = NUMPY.get(datatype)
    if dtype is None:
        raise invalid_argument(f"tensor '{tensor}': unknown datatype '{datatype}'")
    return dtype


def element_count(shape: Sequence[int], tensor: str) -> int:
    if shape and min(shape) < 0:
        raise invalid_argument(f"tensor '{tensor}': shape {list(shape)} has a negative dimension")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise invalid_argument(f"tensor '{tensor}': shape {list(shape)} has more than {MAX_ELEMENTS} elements")
    return count


# -- decoding (request inputs) -------------------------------------------------------------------------


def from_raw(tensor: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview) -> Array:
    """A tensor from raw contents (gRPC `raw_input_contents`, a REST binary chunk)."""
    dtype = check_datatype(datatype, tensor)
    count = element_count(shape, tensor)
    if datatype == "BYTES":
        items = split_bytes(raw, tensor)
        if len(items) != count:
            raise invalid_argument(
                f"tensor '{tensor}': {len(items)} BYTES elements for shape {list(shape)}, expected {count}"
            )
        return bytes_array(items, shape)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise invalid_argument(
            f"tensor '{tensor}': {len(raw)} bytes of {datatype} data for shape {list(shape)}, "
            f"expected {expected}"
        )
    if _NATIVE_IS_LITTLE:
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    return np.frombuffer(raw, dtype=_LITTLE[datatype]).reshape(shape).astype(dtype)


def split_bytes(raw: bytes | memoryview, tensor: str) -> list[bytes]:
    """BYTES raw contents: each element a 4-byte little-endian length, then that many bytes."""
    view = memoryview(raw)
    items: list[bytes] = []
    pos = 0
    while pos < len(view):
        if pos + 4 > len(view):
            raise invalid_argument(f"tensor '{tensor}': BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(view, pos)
        pos += 4
        if pos + length > len(view):
            raise invalid_argument(f"tensor '{tensor}': BYTES element of {length} bytes runs past the data")
        items.append(bytes(view[pos : pos + length]))
        pos += length
    return items


def bytes_array(items: list[bytes], shape: Sequence[int]) -> Array:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(tuple(shape))


def from_contents(tensor: str, datatype: str, shape: Sequence[int], contents: Any) -> Array:
    """A tensor from gRPC typed contents (`InferTensorContents`)."""
    dtype = check_datatype(datatype, tensor)
    count = element_count(shape, tensor)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise invalid_argument(f"tensor '{tensor}': {datatype} data must be sent in raw_input_contents")
    for other in set(CONTENTS_FIELD.values()) - {field}:
        if len(getattr(contents, other)):
            raise invalid_argument(f"tensor '{tensor}': {datatype} data found in {other}, expected {field}")
    values = getattr(contents, field)
    if len(values) != count:
        raise invalid_argument(
            f"tensor '{tensor}': {len(values)} elements in {field} for shape {list(shape)}, expected {count}"
        )
    if datatype == "BYTES":
        return bytes_array(list(values), shape)
    try:
        if dtype.kind in "iu" and dtype.itemsize < 4:  # INT8/16, UINT8/16 travel in 32-bit fields
            wide = np.array(values, dtype=np.int64)
            info = np.iinfo(dtype)
            if wide.size and (wide.min() < info.min or wide.max() > info.max):
                raise OverflowError
            return wide.astype(dtype).reshape(tuple(shape))
        return np.array(values, dtype=dtype).reshape(tuple(shape))
    except OverflowError as exc:
        raise invalid_argument(f"tensor '{tensor}': a value in {field} is out of range for {datatype}") from exc


def from_json(tensor: str, datatype: str, shape: Sequence[int], data: Any) -> Array:
    """A tensor from JSON `data`: flat, or nested like the shape; BYTES elements are strings."""
    dtype = check_datatype(datatype, tensor)
    count = element_count(shape, tensor)
    flat = list(_flatten(data, tensor)) if isinstance(data, list) else [data]
    if len(flat) != count:
        raise invalid_argument(
            f"tensor '{tensor}': {len(flat)} elements in data for shape {list(shape)}, expected {count}"
        )
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise invalid_argument(f"tensor '{tensor}': BYTES data must be strings")
        return bytes_array([v.encode() for v in flat], shape)
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise invalid_argument(f"tensor '{tensor}': BOOL data must be true or false")
    elif not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        raise invalid_argument(f"tensor '{tensor}': {datatype} data must be numbers")
    elif dtype.kind in "iu" and not all(isinstance(v, int) for v in flat):
        raise invalid_argument(f"tensor '{tensor}': {datatype} data must be integers")
    try:
        return np.array(flat, dtype=dtype).reshape(tuple(shape))
    except OverflowError as exc:
        raise invalid_argument(f"tensor '{tensor}': a value is out of range for {datatype}") from exc


def _flatten(value: list[Any], tensor: str, depth: int = 0) -> Any:
    if depth > 64:
        raise invalid_argument(f"tensor '{tensor}': data is nested too deeply")
    for item in value:
        if isinstance(item, list):
            yield from _flatten(item, tensor, depth + 1)
        elif isinstance(item, dict):
            raise invalid_argument(f"tensor '{tensor}': data holds an object where values were expected")
        else:
            yield item


# -- encoding (response outputs) -------------------------------------------------------------------------


def to_raw(array: Array, datatype: str) -> bytes:
    """Raw contents of an output: little-endian elements, or length-prefixed BYTES elements."""
    if datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(b)) + b for b in (_as_bytes(v) for v in array.ravel()))
    if _NATIVE_IS_LITTLE and array.dtype == NUMPY[datatype]:
        return array.tobytes()  # C order, whatever the array's strides
    return np.ascontiguousarray(array, dtype=_LITTLE[datatype]).tobytes()


def fill_contents(contents: Any, array: Array, datatype: str) -> None:
    """Typed contents of an output (`InferTensorContents`)."""
    field = getattr(contents, CONTENTS_FIELD[datatype]) if datatype in CONTENTS_FIELD else None
    if field is None:
        raise invalid_argument(f"{datatype} outputs have no typed contents field; send raw_input_contents")
    if datatype == "BYTES":
        field.extend(_as_bytes(v) for v in array.ravel())
    else:
        field.extend(array.ravel().tolist())


def to_json(array: Array, datatype: str) -> list[Any]:
    """JSON `data` of an output, flat in row-major order. BYTES that are not UTF-8 get U+FFFD replacements
    (as TF Serving's REST strings here); `binary_data` returns them exactly."""
    if datatype == "BYTES":
        return [_as_bytes(v).decode("utf-8", "replace") for v in array.ravel()]
    if datatype in ("FP16", "BF16"):
        return array.astype(np.float32).ravel().tolist()
    return array.ravel().tolist()


def json_data(array: Array, datatype: str) -> Any:
    """`to_json` for orjson with OPT_SERIALIZE_NUMPY: numeric data stays a flat numpy array, written natively
    (NaN and infinities as null); BYTES and the 16-bit floats as `to_json` writes them."""
    if datatype in ("BYTES", "FP16", "BF16"):
        return to_json(array, datatype)
    return np.ascontiguousarray(array).ravel()


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return str(value).encode()
