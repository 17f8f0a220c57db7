"""The fast JSON tensor paths (svc.wire.json_fast, svc.wire.json_fast_parse) against the exact element-by-element
ones (`fast=False`): the same bytes out, the same tensors in, the same error status and text (issue 11)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tensorflow.core.framework import types_pb2

from svc.errors import ServingError
from svc.wire import json_fast
from svc.wire.json_tensor import Format, format_predict, parse_predict

Array = npt.NDArray[Any]
D = types_pb2

DTYPES: dict[int, type[np.generic]] = {
    D.DT_FLOAT: np.float32,
    D.DT_DOUBLE: np.float64,
    D.DT_INT32: np.int32,
    D.DT_INT16: np.int16,
    D.DT_INT8: np.int8,
    D.DT_UINT8: np.uint8,
    D.DT_INT64: np.int64,
    D.DT_UINT32: np.uint32,
    D.DT_UINT64: np.uint64,
    D.DT_BOOL: np.bool_,
}
FLOAT_EDGES = [
    0.0,
    -0.0,
    np.nan,
    np.inf,
    -np.inf,
    1e-45,
    5e-324,
    1.17549435e-38,
    3.4028235e38,
    1.7976931348623157e308,
]
FLOAT_EDGES += [1e16, 1e17, 123456.0, 1234567.0, 1e-4, 1e-5, 1e5, 1e6, 999999.5, 0.1, 1 / 3, 2.5, 100.0]


def write(
    outputs: Mapping[str, Array], dtypes: Mapping[str, int], fmt: Format, **options: Any
) -> bytes | str:
    try:
        return format_predict(outputs, dtypes, fmt, **options)
    except ServingError as e:
        return e.status_text()


def writers_agree(outputs: Mapping[str, Array], dtypes: Mapping[str, int]) -> None:
    for fmt in Format:
        exact = write(outputs, dtypes, fmt, fast=False)
        assert write(outputs, dtypes, fmt, fast_from=1) == exact, fmt  # every tensor on the fast writer
        assert write(outputs, dtypes, fmt) == exact, fmt  # the default size threshold


def arrays(dtype: type[np.generic], max_dims: int = 4) -> st.SearchStrategy[Array]:
    elements: st.SearchStrategy[Any] | None = None
    if np.dtype(dtype).kind == "f":
        widths: dict[int, Literal[16, 32, 64]] = {2: 16, 4: 32, 8: 64}
        width = widths[np.dtype(dtype).itemsize]

        def exact(value: float) -> float:
            with np.errstate(over="ignore"):
                return float(np.dtype(dtype).type(value))

        elements = st.one_of(
            st.floats(width=width),  # NaN, +-Inf, -0.0 and subnormals included
            st.sampled_from(FLOAT_EDGES).map(exact),
            st.integers(-(10**7), 10**7).map(lambda v: exact(v / 1000)),  # few significant digits: `%g`
        )
    shapes = hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=1, max_side=5)
    return hnp.arrays(dtype, shapes, elements=elements)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dtype=st.sampled_from(sorted(DTYPES)))
def test_writer_matches_exact_writer_on_random_tensors(data: st.DataObject, dtype: int) -> None:
    array = data.draw(arrays(DTYPES[dtype]))
    writers_agree({"y": array}, {"y": dtype})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), first=st.sampled_from(sorted(DTYPES)), second=st.sampled_from(sorted(DTYPES)))
def test_writer_matches_exact_writer_with_several_outputs(
    data: st.DataObject, first: int, second: int
) -> None:
    a = data.draw(arrays(DTYPES[first], 3))
    b = data.draw(arrays(DTYPES[second], 3))
    if data.draw(st.booleans()):  # same batch size, as row format needs
        b = np.resize(b, (a.shape[0], *b.shape[1:]))
    writers_agree({"a_out": a, "b_bytes": b}, {"a_out": first, "b_bytes": second})


@pytest.mark.parametrize(("dtype", "bits"), [(np.float32, np.uint32), (np.float64, np.uint64)])
def test_writer_matches_exact_writer_on_random_bit_patterns(dtype: type[np.generic], bits: type[Any]) -> None:
    """Every exponent, every kind of mantissa: the digit generation and its error bound."""
    rng = np.random.default_rng(11)
    pattern = rng.integers(0, np.iinfo(bits).max, size=20_000, dtype=bits, endpoint=True)
    values = pattern.view(dtype)
    dt = D.DT_FLOAT if dtype == np.float32 else D.DT_DOUBLE
    writers_agree({"y": values.reshape(-1, 4)}, {"y": dt})
    scaled = (rng.random(20_000) * 10.0 ** rng.integers(-30, 30, 20_000)).astype(dtype)
    writers_agree({"y": scaled.reshape(4, -1, 5)}, {"y": dt})


def test_float32_writer_matches_exact_writer_next_to_decimal_and_binary_boundaries() -> None:
    """Where `svc.wire.json_float32` changes course (issue 11): powers of ten (its exponent estimate, `%g`'s
    fixed/scientific switch at 1e-4 and 1e6, `%.9g`'s at 1e9), 6 and 9 nines rounding up to the next power,
    powers of two (the smaller gap below them), subnormals and the largest float, each with its neighbours
    and both signs."""
    centers = [10.0**e * m for e in range(-46, 39) for m in (1.0, 0.999_999_5, 0.999_999_999_5, 0.5)]
    centers += [2.0**e for e in range(-149, 128)] + [1.17549435e-38, 3.4028235e38, 1e-45]
    with np.errstate(over="ignore"):
        below = above = np.array(centers).astype(np.float32)
        values = [below]
        for _ in range(3):
            below, above = np.nextafter(below, np.float32(0)), np.nextafter(above, np.float32(np.inf))
            values += [below, above]
    flat = np.concatenate(values)
    flat = np.concatenate([flat, -flat])
    writers_agree({"y": flat.reshape(-1, 2)}, {"y": D.DT_FLOAT})


def test_writer_matches_exact_writer_on_integer_extremes() -> None:
    for dtype, np_type in DTYPES.items():
        if np.dtype(np_type).kind not in "iu":
            continue
        info = np.iinfo(np.dtype(np_type))
        values = np.array([info.min, info.max, 0, 1, info.max // 10, info.min // 7], dtype=np_type)
        writers_agree({"y": values.reshape(-1, 1)}, {"y": dtype})


def test_writer_keeps_string_and_empty_outputs_exact() -> None:
    text = np.array(["a\u00e9\x01", "\"\\'"], dtype=object)
    raw = np.array([b"\xff\x00", b"ok"], dtype=object)
    writers_agree({"s": text, "s_bytes": raw}, {"s": D.DT_STRING, "s_bytes": D.DT_STRING})
    writers_agree({"y": np.zeros((2, 0), np.float32)}, {"y": D.DT_FLOAT})
    writers_agree({"y": np.zeros((0, 3), np.int64)}, {"y": D.DT_INT64})


def test_double_digits_need_extended_precision_here() -> None:
    """On x86-64 Linux numpy's longdouble is the x87 80-bit type, so doubles take the fast writer too."""
    assert json_fast.EXTENDED_DOUBLES


# --- parsing -------------------------------------------------------------------------------------------


def parse_outcome(body: bytes, input_map: Mapping[str, int], fast: bool) -> Any:
    calls: list[str] = []

    def get_input_map(name: str) -> Mapping[str, int]:
        calls.append(name)
        return input_map

    try:
        parsed = parse_predict(body, get_input_map, fast=fast)
    except ServingError as e:
        return ("error", e.code, e.message, calls)
    tensors = {
        key: (a.dtype.str, a.shape, a.tobytes() if a.dtype != object else a.tolist())
        for key, a in parsed.inputs.items()
    }
    return (parsed.signature_name, parsed.format, tensors, calls)


def parsers_agree(body: bytes, input_map: Mapping[str, int]) -> None:
    assert parse_outcome(body, input_map, True) == parse_outcome(body, input_map, False)


json_scalars = st.one_of(
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.sampled_from([0, -1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 1e308, 5e-324, -0.0]),
)


def dense(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A rectangular nested list (sometimes ragged) of JSON values."""

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        shape = draw(st.lists(st.integers(1, 3), min_size=0, max_size=3))
        if not shape:
            return draw(scalars)

        def fill(level: int) -> Any:
            if level == len(shape):
                return draw(scalars)
            size = shape[level] + (1 if draw(st.integers(0, 20)) == 0 else 0)  # now and then ragged
            return [fill(level + 1) for _ in range(size)]

        return fill(0)

    return build()


def numbers_of(dtype: int) -> st.SearchStrategy[Any]:
    if dtype == D.DT_BOOL:
        return st.booleans()
    if dtype in (D.DT_FLOAT, D.DT_DOUBLE):
        return st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**70), 2**70))
    return st.integers(-(2**64), 2**64)


@st.composite
def documents(draw: st.DrawFn) -> tuple[bytes, dict[str, int]]:
    names = draw(st.lists(st.sampled_from(["x", "y", "b64", "z"]), min_size=1, max_size=3, unique=True))
    input_map = {name: draw(st.sampled_from([*sorted(DTYPES), D.DT_STRING])) for name in names}
    mostly = {
        name: st.one_of(numbers_of(dtype), json_scalars) if draw(st.booleans()) else numbers_of(dtype)
        for name, dtype in input_map.items()
    }
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        rows = draw(st.integers(1, 3))
        if len(names) == 1 and draw(st.booleans()):
            (name,) = names
            doc["instances"] = [draw(dense(mostly[name])) for _ in range(rows)]
        else:
            doc["instances"] = [
                {n: draw(dense(mostly[n])) for n in names if draw(st.integers(0, 15))} for _ in range(rows)
            ]
    elif len(names) == 1 and draw(st.booleans()):
        doc["inputs"] = draw(dense(mostly[names[0]]))
    else:
        doc["inputs"] = {n: draw(dense(mostly[n])) for n in names if draw(st.integers(0, 15))}
    if draw(st.integers(0, 5)) == 0:
        doc["signature_name"] = draw(st.one_of(st.just("serving_default"), st.integers()))
    body = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()
    return body, input_map


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=documents())
@example(case=(b'{"instances": [1, true]}', {"x": D.DT_FLOAT}))
@example(case=(b'{"instances": [[1], [2, 3]]}', {"x": D.DT_INT32}))
@example(case=(b'{"inputs": [NaN, Infinity, -Infinity]}', {"x": D.DT_FLOAT}))
@example(case=(b'{"inputs": [18446744073709551616]}', {"x": D.DT_UINT64}))
@example(case=(b'{"inputs": [18446744073709551616]}', {"x": D.DT_FLOAT}))
@example(case=(b'\xef\xbb\xbf{"inputs": [1]}', {"x": D.DT_INT8}))
@example(case=(b'{"inputs": [1e400, -1e400]}', {"x": D.DT_DOUBLE}))
@example(case=(b'{"inputs": [1]}\x00trailing', {"x": D.DT_INT64}))
@example(case=(b'{"inputs": {"b64": "AAAA"}}', {"b64": D.DT_INT64}))
def test_parser_matches_exact_parser_on_random_documents(case: tuple[bytes, dict[str, int]]) -> None:
    body, input_map = case
    parsers_agree(body, input_map)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=documents(), data=st.data())
def test_parser_matches_exact_parser_on_malformed_bodies(
    case: tuple[bytes, dict[str, int]], data: st.DataObject
) -> None:
    """Bytes deleted, replaced or inserted anywhere: the same tensors or the same status and text."""
    body, input_map = case
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(body)))
        junk = data.draw(
            st.sampled_from(
                [b"", b",", b"]", b"[", b"}", b'"', b"\\", b"\x00", b"\xff", b"NaN", b"-", b"e", b" "]
            )
        )
        cut = data.draw(st.integers(0, 2))
        body = body[:at] + junk + body[at + cut :]
    parsers_agree(body, input_map)


def test_parser_takes_the_fast_path_for_plain_numeric_bodies() -> None:
    """A regression guard: the fast path must not silently hand every body to the exact one."""
    from svc.wire import json_fast_parse

    image = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3) / 7
    body = json.dumps({"instances": image.tolist()}).encode()
    parsed = json_fast_parse.parse_predict(body, lambda _name: {"x": D.DT_FLOAT})
    assert parsed is not None
    assert parsed[0] == ""
    assert parsed[2] is True
    np.testing.assert_array_equal(parsed[1]["x"], image)
    columns = json.dumps({"inputs": {"a": [[1, 2]], "b": [True]}, "signature_name": "s"}).encode()
    parsed = json_fast_parse.parse_predict(columns, lambda _name: {"a": D.DT_INT64, "b": D.DT_BOOL})
    assert parsed is None  # `true` in the body: the int64 input could hide a boolean, the exact path decides
    columns = json.dumps({"inputs": {"a": [[1, 2]], "b": [3.5]}}).encode()
    parsed = json_fast_parse.parse_predict(columns, lambda _name: {"a": D.DT_INT64, "b": D.DT_DOUBLE})
    assert parsed is not None
    assert parsed[1]["a"].dtype == np.int64
    assert parsed[1]["b"].dtype == np.float64
