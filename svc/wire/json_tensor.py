"""REST JSON <-> tensors: TF Serving's `util/json_tensor.cc` for predict, plus the helpers of that file that
classify/regress share (`signature_name`, `{"b64": ...}` objects, `write_decimal`).

JSON itself is read and written by `svc/wire/rapidjson_compat.py`, an imitation of the rapidjson 1.1.0 that TF Serving
links. Tensor output imitates rapidjson's `PrettyWriter` (4-space indent, arrays on one line where TF Serving
asks for it). Error texts are TF Serving's. Classify/regress and the GET bodies (status, metadata) are in
`svc/wire/json_examples.py`.

Deliberate deviations from TF Serving, all on odd input (for parsing, see `svc/wire/rapidjson_compat.py`):
- Tensor values deeper than numpy's 64 dimensions or larger than `MAX_ELEMENTS` are refused.
- Output strings that are not UTF-8 get U+FFFD replacements (TF Serving writes the raw bytes: invalid JSON
  that most clients refuse); `*_bytes` outputs are lossless base64 as in TF Serving.
- Several inputs or outputs are handled in sorted name order (TF Serving: protobuf map order, unspecified).
"""

from __future__ import annotations

import base64
import binascii
import enum
import math
import re
import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, assert_never, cast

import numpy as np
from tensorflow.core.framework import types_pb2

from svc.errors import ServingError, invalid_argument, unimplemented
from svc.types import INT64_MAX, MAX_ELEMENTS, NUMPY_DTYPES, Array, Json
from svc.wire import json_fast, json_fast_parse
from svc.wire.rapidjson_compat import (
    as_double,
    debug_string,
    encode,
    format_error_status,
    json_type,
    parse_json_object,
    quote,
    utf8,
)

__all__ = [
    "MAX_ELEMENTS",
    "MAX_RANK",
    "Format",
    "PredictJson",
    "format_error",
    "format_predict",
    "parse_predict",
    "write_decimal",
]

MAX_RANK = 64  # numpy's limit on dimensions


class Format(enum.Enum):
    ROW = "row"  # "instances" in, "predictions" out
    COLUMNAR = "columnar"  # "inputs" in, "outputs" out


@dataclass(frozen=True, slots=True)
class PredictJson:
    signature_name: str  # "" when absent
    inputs: dict[str, Array]
    format: Format


# --- data types ----------------------------------------------------------------------------------------

# The dtypes a JSON tensor can name (the last five only as empty tensors: UNIMPLEMENTED otherwise).
_NUMPY = {
    dt: NUMPY_DTYPES[dt]
    for dt in (
        types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT32, types_pb2.DT_INT16, types_pb2.DT_INT8,
        types_pb2.DT_UINT8, types_pb2.DT_INT64, types_pb2.DT_UINT32, types_pb2.DT_UINT64, types_pb2.DT_BOOL,
        types_pb2.DT_STRING, types_pb2.DT_HALF, types_pb2.DT_UINT16, types_pb2.DT_COMPLEX64,
        types_pb2.DT_COMPLEX128,
    )
}
_FLOATS = frozenset({types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE})
_I32 = (-(2**31), 2**31 - 1)
# The JSON integers each dtype takes (rapidjson IsInt / IsInt64 / IsUint / IsUint64). INT16, INT8 and UINT8
# take any int32 and are narrowed with wrap-around, as TF's TensorProto -> Tensor copy does.
_INT_RANGE: dict[int, tuple[int, int]] = {
    types_pb2.DT_INT32: _I32,
    types_pb2.DT_INT16: _I32,
    types_pb2.DT_INT8: _I32,
    types_pb2.DT_UINT8: _I32,
    types_pb2.DT_INT64: (-INT64_MAX - 1, INT64_MAX),
    types_pb2.DT_UINT32: (0, 2**32 - 1),
    types_pb2.DT_UINT64: (0, 2**64 - 1),
}
_NUMBER_TYPES = frozenset({int, float})


def _dtype_name(dtype: int) -> str:
    """TF's `DataTypeString`: `float`, `int32`, `float_ref`, ..."""
    if dtype == types_pb2.DT_INVALID:
        return "INVALID"
    try:
        return str(types_pb2.DataType.Name(dtype))[3:].lower()
    except ValueError:
        return f"unknown dtype enum ({dtype})"


# --- TF Serving's helpers on JSON values ---------------------------------------------------------------


def signature_name(doc: dict[str, Json]) -> str:
    """TF Serving's `FillSignature`: the optional `signature_name` string."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {debug_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    # Bytes that are not UTF-8 (kept as surrogates by the parser) cannot name a signature or enter a
    # protobuf string: they become U+FFFD, and the lookup answers "not found" (issue 10 fuzzing: was a 500).
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def is_base64_object(value: Json) -> bool:
    """`{"b64": "<string>"}` and nothing else."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def decode_base64_object(value: Json) -> bytes:
    if not isinstance(value, dict) or not is_base64_object(value):
        raise invalid_argument(f"JSON Value: {debug_string(value)} not formatted correctly for base64 data")
    encoded = value["b64"]
    assert isinstance(encoded, str)
    decoded = _base64_unescape(utf8(encoded))
    if decoded is None:
        raise invalid_argument("Unable to base64 decode")
    return decoded


_BASE64_ALPHABET = re.compile(rb"[A-Za-z0-9+/]*")


def _base64_unescape(data: bytes) -> bytes | None:
    """absl's `Base64Unescape`: whitespace ignored, padding (`=` or `.`) optional but exact if present."""
    data = data.translate(None, b" \t\n\v\f\r")
    core = data.rstrip(b"=.")
    if not _BASE64_ALPHABET.fullmatch(core) or len(core) % 4 == 1:
        return None
    missing = -len(core) % 4
    if len(data) - len(core) not in (0, missing):
        return None
    return binascii.a2b_base64(core + b"=" * missing)


# --- numbers -------------------------------------------------------------------------------------------

_F32 = struct.Struct("f")


def to_float32(value: float) -> float:
    """The nearest float32, as a Python float (+-inf beyond its range)."""
    try:
        return float(_F32.unpack(_F32.pack(value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


def write_decimal(value: float, is_double: bool) -> str:
    """TF Serving's `WriteDecimal`: `%g` if that round-trips at the value's precision, else `%.9g` (float) or
    `%.17g` (double); `.0` appended to whole numbers; bare `NaN`, `Infinity`, `-Infinity`."""
    if not is_double:
        value = to_float32(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    back = float(text)
    if (back if is_double else to_float32(back)) != value:
        text = f"{value:.17g}" if is_double else f"{value:.9g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


_VECTOR_MIN = 20  # measured crossover of the two writers of `_decimal_tokens`


def _decimal_tokens(values: Array) -> list[str]:
    """`write_decimal` over a float32 or float64 array, its round-trip test done by numpy (below ~20 elements
    element by element: numpy's fixed cost is larger, issue 11)."""
    floats: list[float] = values.tolist()
    if len(floats) < _VECTOR_MIN:
        is_double = values.dtype == np.float64
        return [write_decimal(f, is_double) for f in floats]
    texts = list(map("%g".__mod__, floats))
    with np.errstate(over="ignore", invalid="ignore"):
        back = np.array(texts, dtype=np.float64).astype(values.dtype)
    finite = np.isfinite(values)
    redo: list[bool] = ((back != values) & finite).tolist()  # %g does not round-trip: full precision
    full = ("%.17g" if values.dtype == np.float64 else "%.9g").__mod__
    texts = [full(f) if r else t for t, r, f in zip(texts, redo, floats, strict=True)]
    texts = [t if "." in t or "e" in t else t + ".0" for t in texts]
    for i in np.flatnonzero(~finite).tolist():
        v = floats[i]
        texts[i] = "NaN" if math.isnan(v) else "-Infinity" if v < 0 else "Infinity"
    return texts


def _indent(depth: int) -> str:
    return " " * 4 * depth


# --- predict request -----------------------------------------------------------------------------------


def parse_predict(
    body: bytes, get_input_map: Callable[[str], Mapping[str, int]], *, fast: bool = True
) -> PredictJson:
    """TF Serving's `FillPredictRequestFromJson`. `get_input_map(signature_name)` gives the signature's
    {input alias: DataType} (or raises); it is called (once) after the body is parsed, as in TF Serving.

    Numeric tensors take the fast path of `json_fast_parse` (orjson + numpy); whatever it cannot decide alone
    (errors, strings, odd JSON) is parsed again by the exact rapidjson imitation below (`fast=False`: only
    that, for tests)."""
    input_maps: dict[str, Mapping[str, int]] = {}

    def input_map_once(name: str) -> Mapping[str, int]:
        if name not in input_maps:
            input_maps[name] = get_input_map(name)
        return input_maps[name]

    parsed = json_fast_parse.parse_predict(body, input_map_once) if fast else None
    if parsed is not None:
        signature, inputs, row_format = parsed
        return PredictJson(signature, inputs, Format.ROW if row_format else Format.COLUMNAR)
    return _parse_predict_exact(body, input_map_once)


def _parse_predict_exact(body: bytes, get_input_map: Callable[[str], Mapping[str, int]]) -> PredictJson:
    doc = parse_json_object(body)
    name = signature_name(doc)
    input_map = dict(get_input_map(name))
    if not input_map:
        raise invalid_argument(f"Failed to get input map for signature: {name or 'DEFAULT'}")
    if "instances" in doc:
        if "inputs" in doc:
            raise format_error_status(
                doc, "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
            )
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise format_error_status(doc, "Expecting 'instances' to be an list/array")
        if not instances:
            raise format_error_status(doc, "No values in 'instances' array")
        return PredictJson(name, _from_instances(instances, input_map), Format.ROW)
    if "inputs" in doc:
        return PredictJson(name, _from_inputs(doc["inputs"], input_map), Format.COLUMNAR)
    raise invalid_argument("Missing 'inputs' or 'instances' key")


@dataclass(slots=True)
class _Rows:
    shape: tuple[int, ...]
    size: int
    values: list[Any] = field(default_factory=list)


def _is_named_object(value: Json) -> bool:
    return isinstance(value, dict) and not is_base64_object(value)


def _from_instances(instances: list[Json], input_map: dict[str, int]) -> dict[str, Array]:
    """Row format: every element is one row of the (single) input, or an object with one row per input."""
    if not isinstance(instances[0], dict) and len(input_map) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors required as "
            "per tensorinfo_map"
        )
    objects = _is_named_object(instances[0])
    names = sorted(input_map)
    rows: dict[str, _Rows] = {}
    for i, element in enumerate(instances):
        if objects:
            if not isinstance(element, dict) or is_base64_object(element):
                raise invalid_argument(f"Expecting object but got list at item {i} of input list")
            for key, item in element.items():
                try:
                    _add_row(rows, key, item, input_map)
                except ServingError as e:
                    raise invalid_argument(
                        f"Failed to process element: {i} key: {key} of 'instances' list. Error: {e.status_text()}"
                    ) from None
            if sorted(element) != names:
                raise invalid_argument(
                    f"Failed to process element: {i} of 'instances' list. JSON object: {debug_string(element)} "
                    f"keys must be equal to: {','.join(names)}"
                )
        else:
            if _is_named_object(element):
                raise invalid_argument(f"Expecting value/list but got object at item {i} of input list")
            try:
                _add_row(rows, names[0], element, input_map)
            except ServingError as e:
                raise invalid_argument(
                    f"Failed to process element: {i} of 'instances' list. Error: {e.status_text()}"
                ) from None
    return {
        key: _to_array(r.values, (len(instances), *r.shape), input_map[key])
        for key, r in sorted(rows.items())
    }


def _add_row(rows: dict[str, _Rows], key: str, item: Json, input_map: dict[str, int]) -> None:
    if key not in input_map:
        raise invalid_argument(f"JSON object: does not have named input: {key}")
    shape, values = _tensor_values(item, input_map[key], MAX_RANK - 1)
    seen = rows.get(key)
    if seen is None:
        rows[key] = _Rows(shape, len(values), values)
    elif len(values) != seen.size:
        raise invalid_argument(f"Expecting tensor size: {seen.size} but got: {len(values)}")
    elif shape != seen.shape:
        raise invalid_argument(f"Expecting shape {_shape_text(seen.shape)} but got: {_shape_text(shape)}")
    else:
        seen.values.extend(values)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _from_inputs(value: Json, input_map: dict[str, int]) -> dict[str, Array]:
    """Columnar format: one value (single input) or an object keyed by input alias; extra keys ignored."""
    if not isinstance(value, dict) or is_base64_object(value):
        if len(input_map) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors required as "
                "per tensorinfo_map"
            )
        ((key, dtype),) = input_map.items()
        return {key: _tensor(value, dtype)}
    tensors = {}
    for key in sorted(input_map):
        if key not in value:
            raise invalid_argument(f"Missing named input: {key} in 'inputs' object.")
        tensors[key] = _tensor(value[key], input_map[key])
    return tensors


def _tensor(value: Json, dtype: int) -> Array:
    shape, values = _tensor_values(value, dtype, MAX_RANK)
    return _to_array(values, shape, dtype)


def _tensor_values(value: Json, dtype: int, max_rank: int) -> tuple[tuple[int, ...], list[Any]]:
    """The shape (from the first element at each level) and the flat converted values of a dense JSON tensor,
    or the first error in document order, as TF Serving's `FillTensorProto` finds it."""
    dims: list[int] = []
    first = value
    while isinstance(first, list):
        dims.append(len(first))
        if len(dims) > max_rank:
            raise invalid_argument(
                f"JSON Value: {debug_string(value)} is nested deeper than {max_rank} levels; tensors of more "
                f"than {MAX_RANK} dimensions are not supported"
            )
        if not first:
            break
        first = first[0]
    shape = tuple(dims)
    if math.prod(shape) > MAX_ELEMENTS:
        raise invalid_argument(
            f"JSON Value: {debug_string(value)} has {math.prod(shape)} elements, more than the "
            f"{MAX_ELEMENTS} supported"
        )
    leaves = _dense_leaves(value, shape)
    if leaves is None:  # ragged somewhere: walk it in document order to report the first error
        values: list[Any] = []
        _walk(value, 0, shape, dtype, values)
        return shape, values
    if not leaves and dtype not in _NUMPY:
        raise unimplemented(f"Conversion of JSON Value: {debug_string(value)} to type: {_dtype_name(dtype)}")
    return shape, _leaf_values(leaves, dtype, len(shape))


def _dense_leaves(value: Json, shape: tuple[int, ...]) -> list[Json] | None:
    """The leaves in document order if every list has its level's size, else None."""
    items: list[Json] = [value]
    for dim in shape:
        for item in items:
            if type(item) is not list or len(item) != dim:
                return None
        items = list(chain.from_iterable(items))  # type: ignore[arg-type]
    return items


def _walk(value: Json, level: int, shape: tuple[int, ...], dtype: int, out: list[Any]) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        out.append(_leaf_value(value, dtype, rank))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _walk(item, level + 1, shape, dtype, out)


def _leaf_values(leaves: list[Json], dtype: int, rank: int) -> list[Any]:
    """Leaves checked (and strings decoded) for `dtype`; a set of types decides the common cases at once."""
    types = set(map(type, leaves))
    if dtype in _FLOATS:
        if types <= _NUMBER_TYPES:
            return leaves
    elif dtype in _INT_RANGE:
        low, high = _INT_RANGE[dtype]
        ints = cast(list[int], leaves)
        if types <= {int} and (not ints or (low <= min(ints) and max(ints) <= high)):
            return leaves
    elif dtype == types_pb2.DT_BOOL:
        if types <= {bool}:
            return leaves
    elif dtype == types_pb2.DT_STRING and types <= {str}:
        return [utf8(s) for s in leaves]  # type: ignore[arg-type]
    return [_leaf_value(leaf, dtype, rank) for leaf in leaves]


def _type_error(value: Json, dtype: int) -> ServingError:
    return invalid_argument(
        f"JSON Value: {debug_string(value)} Type: {json_type(value)} is not of expected type: {_dtype_name(dtype)}"
    )


def _leaf_value(value: Json, dtype: int, rank: int) -> Any:
    """TF Serving's `AddValueToTensor` for one leaf (objects are base64 strings or type errors)."""
    if isinstance(value, list):
        raise invalid_argument(f"Encountered list at unexpected level: {rank} expected < {rank}")
    if isinstance(value, dict):
        if dtype == types_pb2.DT_STRING:
            return decode_base64_object(value)
        raise _type_error(value, dtype)
    kind = type(value)
    if dtype in _FLOATS:
        ok = kind in _NUMBER_TYPES
    elif dtype in _INT_RANGE:
        low, high = _INT_RANGE[dtype]
        ok = kind is int and low <= value <= high  # type: ignore[operator]
    elif dtype == types_pb2.DT_BOOL:
        ok = kind is bool
    elif dtype == types_pb2.DT_STRING:
        if isinstance(value, str):
            return utf8(value)
        ok = False
    else:
        raise unimplemented(f"Conversion of JSON Value: {debug_string(value)} to type: {_dtype_name(dtype)}")
    if not ok:
        raise _type_error(value, dtype)
    return value


def _to_array(values: list[Any], shape: tuple[int, ...], dtype: int) -> Array:
    target = _NUMPY[dtype]
    if dtype == types_pb2.DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
    elif dtype in _INT_RANGE:  # values are in range; narrower types wrap like TF's int32 -> int8 copy
        array = np.array(values, dtype=np.uint64 if dtype == types_pb2.DT_UINT64 else np.int64).astype(target)
    elif dtype in _FLOATS:
        try:
            wide = np.array(values, dtype=np.float64)
        except OverflowError:  # integers beyond the double range
            wide = np.array([as_double(v) for v in values])
        with np.errstate(over="ignore"):
            array = wide.astype(target)
    else:
        array = np.array(values, dtype=target)
    return array.reshape(shape)


# --- predict response ----------------------------------------------------------------------------------

_INT_OUTPUTS = frozenset(_INT_RANGE)
_FAST_OUTPUTS = _FLOATS | _INT_OUTPUTS | {types_pb2.DT_BOOL}
# measured crossovers (issue 11): float32 has its own leaner writer (`json_float32`)
_FAST_MIN = {types_pb2.DT_FLOAT: 192, types_pb2.DT_DOUBLE: 512}
_FAST_MIN_OTHERS = 1024


def format_predict(
    outputs: Mapping[str, Array],
    dtypes: Mapping[str, int],
    fmt: Format,
    *,
    fast: bool = True,
    fast_from: int | None = None,
) -> bytes:
    """TF Serving's `MakeJsonFromTensors`: `{"predictions": ...}` (row) or `{"outputs": ...}` (columnar).
    Numeric tensors of at least `fast_from` elements (default: the measured crossovers) are written by
    `json_fast`, smaller ones element by element (`fast=False`: all of them, for tests)."""
    if not fast:
        fast_from = sys.maxsize
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    arrays = {name: np.asarray(outputs[name]) for name in names}
    match fmt:
        case Format.ROW:
            batch = -1
            for name in names:
                shape = arrays[name].shape
                if not shape:
                    raise invalid_argument(f"Tensor name: {name} has no shape information ")
                if batch >= 0 and shape[0] != batch:
                    raise invalid_argument(
                        f"Tensor name: {name} has inconsistent batch size: {shape[0]} expecting: {batch}"
                    )
                batch = shape[0]
            # Rows go on one line each; with several outputs each row is an object one level deeper.
            if len(names) == 1:  # written between its head and tail: one copy of a big text
                (name,) = names
                tail = (b"\n    ]" if batch else b"]") + b"\n}"
                return _row_text(name, arrays[name], dtypes[name], fast_from, b'{\n    "predictions": [', tail)
            rows = {name: _row_parts(name, arrays[name], dtypes[name], fast_from) for name in names}
            keys = {name: b"\n            " + encode(quote(name)) + b": " for name in names}
            items = b",".join(
                b"\n        {" + b",".join(keys[name] + rows[name][b] for name in names) + b"\n        }"
                for b in range(batch)
            )
            return b'{\n    "predictions": [' + items + (b"\n    ]" if batch else b"]") + b"\n}"
        case Format.COLUMNAR:
            if len(names) == 1:
                (name,) = names
                return _columnar(name, arrays[name], dtypes[name], 1, fast_from, b'{\n    "outputs": ', b"\n}")
            members = b",".join(
                b"\n        "
                + encode(quote(name))
                + b": "
                + _columnar(name, arrays[name], dtypes[name], 2, fast_from)
                for name in names
            )
            return b'{\n    "outputs": {' + members + b"\n    }\n}"
        case _:
            assert_never(fmt)


def _numeric(array: Array, dtype: int, fast_from: int | None) -> Array | None:
    """The array as the dtype's numpy type, where `json_fast` writes it (a non-empty numeric tensor of at least
    `fast_from` elements: the vectorised writer costs 40-150 µs whatever the size, small ones go one by one)."""
    if fast_from is None:
        fast_from = _FAST_MIN.get(dtype, _FAST_MIN_OTHERS)
    if array.size < max(fast_from, 1) or array.dtype.kind not in "biuf" or dtype not in _FAST_OUTPUTS:
        return None
    converted = array.astype(_NUMPY[dtype], copy=False)
    return converted if json_fast.tokens_supported(converted) else None


def _row_text(
    name: str, array: Array, dtype: int, fast_from: int | None, head: bytes = b"", tail: bytes = b""
) -> bytes:
    """The rows of one output, joined by `, ` (one line each), between `head` and `tail`."""
    numeric = _numeric(array, dtype, fast_from)
    if numeric is not None:
        return json_fast.row_text(numeric, write_decimal, head, tail)
    return head + encode(", ".join(_single_line(_tokens(name, array, dtype, 1), array.shape))) + tail


def _row_parts(name: str, array: Array, dtype: int, fast_from: int | None) -> list[bytes]:
    """Each row of one output on one line, for the row objects of several outputs."""
    numeric = _numeric(array, dtype, fast_from)
    if numeric is not None:
        return json_fast.row_parts(numeric, write_decimal)
    return [encode(item) for item in _single_line(_tokens(name, array, dtype, 2), array.shape)]


def _columnar(
    name: str, array: Array, dtype: int, depth: int, fast_from: int | None, head: bytes = b"", tail: bytes = b""
) -> bytes:
    """One output in PrettyWriter's layout, its `[` at nesting `depth`, between `head` and `tail`."""
    numeric = _numeric(array, dtype, fast_from)
    if numeric is not None:
        return json_fast.columnar_text(numeric, depth, write_decimal, head, tail)
    return head + encode(_pretty(_tokens(name, array, dtype, depth), array.shape, depth)) + tail


def _tokens(name: str, array: Array, dtype: int, depth: int) -> list[str]:
    """The JSON text of every element; `depth` is the writer's nesting where the array starts."""
    flat = array.reshape(-1)
    if dtype == types_pb2.DT_FLOAT:
        return _decimal_tokens(flat.astype(np.float32))
    if dtype == types_pb2.DT_DOUBLE:
        return _decimal_tokens(flat.astype(np.float64))
    if dtype in _INT_OUTPUTS:
        return [str(v) for v in flat.astype(_NUMPY[dtype]).tolist()]
    if dtype == types_pb2.DT_BOOL:
        return ["true" if v else "false" for v in flat.tolist()]
    if dtype == types_pb2.DT_STRING:
        strings = [v.encode() if isinstance(v, str) else bytes(v) for v in flat.tolist()]
        if name.endswith("_bytes"):  # {"b64": ...}, an object one level below the innermost array
            level = depth + array.ndim
            head, tail = "{\n" + _indent(level + 1) + '"b64": "', '"\n' + _indent(level) + "}"
            return [head + base64.b64encode(s).decode() + tail for s in strings]
        return [quote(s.decode("utf-8", "replace")) for s in strings]
    if flat.size:
        raise invalid_argument(f"Failed to write JSON value for tensor type: {_dtype_name(dtype)}")
    return []


def _single_line(tokens: list[str], shape: tuple[int, ...]) -> list[str]:
    """The items of the outermost dimension, inner arrays written on one line: `[[1, 2], [3, 4]]`."""
    items = tokens
    for axis in range(len(shape) - 1, 0, -1):
        size = shape[axis]
        items = [
            "[" + ", ".join(items[g * size : (g + 1) * size]) + "]" for g in range(math.prod(shape[:axis]))
        ]
    return items


def _pretty(tokens: list[str], shape: tuple[int, ...], depth: int) -> str:
    """A whole tensor in rapidjson's default layout: one element a line, indented by nesting."""
    items = tokens
    for axis in range(len(shape) - 1, -1, -1):
        size, level = shape[axis], depth + axis
        sep, close = ",\n" + _indent(level + 1), "\n" + _indent(level) + "]"
        items = [
            "[\n" + _indent(level + 1) + sep.join(items[g * size : (g + 1) * size]) + close if size else "[]"
            for g in range(math.prod(shape[:axis]))
        ]
    return items[0]


def format_error(message: str) -> bytes:
    """TF Serving's `MakeJsonFromStatus`: the message only, without the code."""
    return encode('{\n    "error": ' + quote(message) + "\n}")
