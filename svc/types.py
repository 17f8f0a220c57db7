"""The type vocabulary of the server, each name defined once: arrays, JSON values, TensorFlow's dtype tables
and the size limits every protocol applies.

A base module: it imports nothing of the server, only numpy, ml_dtypes and TensorFlow's generated `types_pb2`.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import ml_dtypes
import numpy as np
import numpy.typing as npt
from tensorflow.core.framework import types_pb2

Array: TypeAlias = npt.NDArray[Any]
"""A tensor's value as it is fed to and fetched from TensorFlow (DT_STRING: an object array of bytes)."""

Json: TypeAlias = "bool | int | float | str | list[Json] | dict[str, Json] | None"
"""A parsed JSON value."""

INT64_MAX = 2**63 - 1

MAX_ELEMENTS = 2**27
"""The most elements one request tensor may claim (TensorProto or JSON), refused before anything is allocated."""

OFFLOAD_TENSOR_BYTES = 1 << 20
"""Request or response tensors above this many bytes are converted in a worker thread, off the event loop."""

OFFLOAD_JSON_BYTES = 64 * 1024
"""REST request bodies above this many bytes are parsed (and their answers written) in a worker thread."""

OFFLOAD_JSON_ELEMENTS = 8192
"""REST responses above this many elements are written in a worker thread."""


# TF's `DataTypeString` of each base DataType (`types.cc`).
DTYPE_NAMES: dict[int, str] = {
    types_pb2.DT_INVALID: "INVALID",
    types_pb2.DT_FLOAT: "float",
    types_pb2.DT_DOUBLE: "double",
    types_pb2.DT_INT32: "int32",
    types_pb2.DT_UINT8: "uint8",
    types_pb2.DT_INT16: "int16",
    types_pb2.DT_INT8: "int8",
    types_pb2.DT_STRING: "string",
    types_pb2.DT_COMPLEX64: "complex64",
    types_pb2.DT_INT64: "int64",
    types_pb2.DT_BOOL: "bool",
    types_pb2.DT_QINT8: "qint8",
    types_pb2.DT_QUINT8: "quint8",
    types_pb2.DT_QINT32: "qint32",
    types_pb2.DT_BFLOAT16: "bfloat16",
    types_pb2.DT_QINT16: "qint16",
    types_pb2.DT_QUINT16: "quint16",
    types_pb2.DT_UINT16: "uint16",
    types_pb2.DT_COMPLEX128: "complex128",
    types_pb2.DT_HALF: "half",
    types_pb2.DT_RESOURCE: "resource",
    types_pb2.DT_VARIANT: "variant",
    types_pb2.DT_UINT32: "uint32",
    types_pb2.DT_UINT64: "uint64",
    types_pb2.DT_FLOAT8_E5M2: "float8_e5m2",
    types_pb2.DT_FLOAT8_E4M3FN: "float8_e4m3fn",
    types_pb2.DT_FLOAT8_E4M3FNUZ: "float8_e4m3fnuz",
    types_pb2.DT_FLOAT8_E4M3B11FNUZ: "float8_e4m3b11fnuz",
    types_pb2.DT_FLOAT8_E5M2FNUZ: "float8_e5m2fnuz",
    types_pb2.DT_INT4: "int4",
    types_pb2.DT_UINT4: "uint4",
    types_pb2.DT_INT2: "int2",
    types_pb2.DT_UINT2: "uint2",
    types_pb2.DT_FLOAT4_E2M1FN: "float4_e2m1fn",
}


def _quantized(name: str, base: type[np.generic]) -> np.dtype[Any]:
    """TF's numpy stand-in for a quantized type: a one-field record (`dtypes._np_qint8` and friends)."""
    return np.dtype([(name, base)])


# The numpy dtype TF feeds and fetches for each DataType (`tf.as_dtype(dt).as_numpy_dtype`).
NUMPY_DTYPES: dict[int, np.dtype[Any]] = {
    types_pb2.DT_FLOAT: np.dtype(np.float32),
    types_pb2.DT_DOUBLE: np.dtype(np.float64),
    types_pb2.DT_INT32: np.dtype(np.int32),
    types_pb2.DT_UINT8: np.dtype(np.uint8),
    types_pb2.DT_INT16: np.dtype(np.int16),
    types_pb2.DT_INT8: np.dtype(np.int8),
    types_pb2.DT_STRING: np.dtype(object),
    types_pb2.DT_COMPLEX64: np.dtype(np.complex64),
    types_pb2.DT_INT64: np.dtype(np.int64),
    types_pb2.DT_BOOL: np.dtype(np.bool_),
    types_pb2.DT_QINT8: _quantized("qint8", np.int8),
    types_pb2.DT_QUINT8: _quantized("quint8", np.uint8),
    types_pb2.DT_QINT32: _quantized("qint32", np.int32),
    types_pb2.DT_BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    types_pb2.DT_QINT16: _quantized("qint16", np.int16),
    types_pb2.DT_QUINT16: _quantized("quint16", np.uint16),
    types_pb2.DT_UINT16: np.dtype(np.uint16),
    types_pb2.DT_COMPLEX128: np.dtype(np.complex128),
    types_pb2.DT_HALF: np.dtype(np.float16),
    types_pb2.DT_UINT32: np.dtype(np.uint32),
    types_pb2.DT_UINT64: np.dtype(np.uint64),
    types_pb2.DT_FLOAT8_E5M2: np.dtype(ml_dtypes.float8_e5m2),
    types_pb2.DT_FLOAT8_E4M3FN: np.dtype(ml_dtypes.float8_e4m3fn),
    types_pb2.DT_FLOAT8_E4M3FNUZ: np.dtype(ml_dtypes.float8_e4m3fnuz),
    types_pb2.DT_FLOAT8_E4M3B11FNUZ: np.dtype(ml_dtypes.float8_e4m3b11fnuz),
    types_pb2.DT_FLOAT8_E5M2FNUZ: np.dtype(ml_dtypes.float8_e5m2fnuz),
    types_pb2.DT_INT4: np.dtype(ml_dtypes.int4),
    types_pb2.DT_UINT4: np.dtype(ml_dtypes.uint4),
    types_pb2.DT_INT2: np.dtype(ml_dtypes.int2),
    types_pb2.DT_UINT2: np.dtype(ml_dtypes.uint2),
    types_pb2.DT_FLOAT4_E2M1FN: np.dtype(ml_dtypes.float4_e2m1fn),
}
