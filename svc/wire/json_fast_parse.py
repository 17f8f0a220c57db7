"""The fast path of TF Serving's `FillPredictRequestFromJson` for numeric tensors: orjson parses the body and
numpy builds each tensor from the nested lists at once, checking shape and types on the whole array.

It answers only where the exact path (`json_tensor`, on the rapidjson imitation) would give the same tensors:
a valid document in orjson's strict JSON (no `NaN`/`Infinity`, no BOM, no trailing bytes, valid UTF-8), dense
numeric or bool tensors whose inferred numpy kind proves every element has the JSON type the dtype takes.
Anything else, every error included, returns None and the caller parses the body again exactly (so error
texts and offsets stay TF Serving's).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import orjson
from tensorflow.core.framework import types_pb2

__all__ = ["parse_predict"]

Array: TypeAlias = npt.NDArray[Any]

MAX_ELEMENTS = 1 << 28  # as json_tensor.MAX_ELEMENTS (the exact path reports the error)
_FLOATS = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64}
# dtype -> (numpy type, the JSON integers it takes, the type the exact path builds the array in)
_INTS: dict[int, tuple[type[np.generic], int, int, type[np.generic]]] = {
    types_pb2.DT_INT32: (np.int32, -(2**31), 2**31 - 1, np.int64),
    types_pb2.DT_INT16: (np.int16, -(2**31), 2**31 - 1, np.int64),
    types_pb2.DT_INT8: (np.int8, -(2**31), 2**31 - 1, np.int64),
    types_pb2.DT_UINT8: (np.uint8, -(2**31), 2**31 - 1, np.int64),
    types_pb2.DT_INT64: (np.int64, -(2**63), 2**63 - 1, np.int64),
    types_pb2.DT_UINT32: (np.uint32, 0, 2**32 - 1, np.int64),
    types_pb2.DT_UINT64: (np.uint64, 0, 2**64 - 1, np.uint64),
}
Parsed: TypeAlias = tuple[str, dict[str, Array], bool]  # signature name, tensors, row format


def parse_predict(body: bytes, get_input_map: Callable[[str], Mapping[str, int]]) -> Parsed | None:
    """(signature name, tensors, row format) or None where the exact path must decide."""
    # A tensor body makes one Python list per innermost row: keep the collector from walking the whole heap
    # again and again while they are made (they are garbage once the arrays are built).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _parse(body, get_input_map)
    finally:
        if collecting:
            gc.enable()


def _parse(body: bytes, get_input_map: Callable[[str], Mapping[str, int]]) -> Parsed | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    name = doc.get("signature_name", "")
    if type(name) is not str:
        return None
    input_map = get_input_map(name)
    if not input_map:
        return None
    # numpy would read JSON booleans among numbers as 0/1: bodies with `true`/`false` anywhere (even in a
    # string) go the exact way unless the tensor is bool. A `t` or `f` after the first `[` (memchr fast) is
    # needed for either.
    start = max(body.find(b"["), 0)
    has_bools = (body.find(b"t", start) >= 0 or body.find(b"f", start) >= 0) and (
        b"true" in body or b"false" in body
    )
    if "instances" in doc:
        if "inputs" in doc:
            return None
        tensors = _from_instances(doc["instances"], input_map, has_bools)
        return None if tensors is None else (name, tensors, True)
    if "inputs" in doc:
        tensors = _from_inputs(doc["inputs"], input_map, has_bools)
        return None if tensors is None else (name, tensors, False)
    return None


def _is_object(value: Any) -> bool:
    return type(value) is dict


def _from_instances(instances: Any, input_map: Mapping[str, int], has_bools: bool) -> dict[str, Array] | None:
    if type(instances) is not list or not instances:
        return None
    if not _is_object(instances[0]):
        if len(input_map) != 1:
            return None
        ((key, dtype),) = input_map.items()
        array = _array(instances, dtype, has_bools)
        return None if array is None else {key: array}
    names = set(input_map)
    if "b64" in names and len(names) == 1:
        return None  # {"b64": ...} rows are strings
    rows: dict[str, list[Any]] = {key: [] for key in input_map}
    for element in instances:
        if type(element) is not dict or element.keys() != names:
            return None
        for key, value in element.items():
            rows[key].append(value)
    tensors = {}
    for key in sorted(input_map):
        array = _array(rows[key], input_map[key], has_bools)
        if array is None:
            return None
        tensors[key] = array
    return tensors


def _from_inputs(value: Any, input_map: Mapping[str, int], has_bools: bool) -> dict[str, Array] | None:
    if not _is_object(value):
        if len(input_map) != 1:
            return None
        ((key, dtype),) = input_map.items()
        array = _array(value, dtype, has_bools)
        return None if array is None else {key: array}
    if len(value) == 1 and "b64" in value:
        return None
    tensors = {}
    for key in sorted(input_map):
        if key not in value:
            return None
        array = _array(value[key], input_map[key], has_bools)
        if array is None:
            return None
        tensors[key] = array
    return tensors


def _array(value: Any, dtype: int, has_bools: bool) -> Array | None:
    """The tensor of a dense JSON value, if every element is provably of a JSON type `dtype` takes."""
    is_bool = dtype == types_pb2.DT_BOOL
    if has_bools and not is_bool:
        return None
    if not (is_bool or dtype in _FLOATS or dtype in _INTS):
        return None
    try:
        array = np.asarray(value)  # numpy infers the kind: int64/uint64, float64, bool; else str or object
    except (ValueError, OverflowError, TypeError):  # ragged, or integers numpy cannot hold
        return None
    kind = array.dtype.kind
    if array.size == 0 or array.size > MAX_ELEMENTS:
        return None
    if is_bool:
        return array if kind == "b" else None
    if dtype in _FLOATS:
        if kind not in "fiu":
            return None
        with np.errstate(over="ignore"):
            return array.astype(np.float64, copy=False).astype(_FLOATS[dtype])
    target, low, high, build = _INTS[dtype]
    if kind not in "iu" or int(array.min()) < low or int(array.max()) > high:
        return None
    return array.astype(build, copy=False).astype(target)
