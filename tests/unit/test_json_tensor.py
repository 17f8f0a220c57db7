"""svc.wire.json_tensor and svc.wire.json_examples against TF Serving's `util/json_tensor_test.cc` and the texts of
`util/json_tensor.cc` (rapidjson 1.1.0 parse errors, PrettyWriter layout)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    regression_pb2,
)

from svc.errors import Code, ServingError, not_found
from svc.wire.json_examples import (
    format_classify,
    format_model_metadata,
    format_model_status,
    format_regress,
    parse_classify_regress,
)
from svc.wire.json_tensor import (
    Format,
    PredictJson,
    format_error,
    format_predict,
    parse_predict,
    write_decimal,
)
from svc.wire.rapidjson_compat import debug_string
from tests.paths import testdata

Array = npt.NDArray[Any]
D = types_pb2
INT32 = {"default": D.DT_INT32}
FLOAT = {"default": D.DT_FLOAT}
STRING = {"default": D.DT_STRING}


def inputs(mapping: Mapping[str, int]) -> Callable[[str], Mapping[str, int]]:
    return lambda _signature: mapping


def predict(body: str | bytes, mapping: Mapping[str, int] = INT32) -> PredictJson:
    return parse_predict(body.encode() if isinstance(body, str) else body, inputs(mapping))


def error_of(call: Callable[[], object]) -> ServingError:
    with pytest.raises(ServingError) as info:
        call()
    return info.value


def strings(*values: bytes) -> Array:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array


# --- parsing: JSON syntax ------------------------------------------------------------------------------

PARSE_ERRORS = [
    (b"", "JSON Parse error: The document is empty"),
    (b"  \n", "JSON Parse error: The document is empty. at offset: 3"),
    (b"x", "JSON Parse error: Invalid value. at offset: 0"),
    (b"]", "JSON Parse error: The document is empty. at offset: 0"),
    (b"\0{}", "JSON Parse error: The document is empty. at offset: 0"),
    (b"{", "JSON Parse error: Missing a name for object member. at offset: 1"),
    (b"{1: 2}", "JSON Parse error: Missing a name for object member. at offset: 1"),
    (b'{"a": 1,}', "JSON Parse error: Missing a name for object member. at offset: 8"),
    (b'{"a"', "JSON Parse error: Missing a colon after a name of object member. at offset: 4"),
    (b'{"a" 1}', "JSON Parse error: Missing a colon after a name of object member. at offset: 5"),
    (b'{"a":1', "JSON Parse error: Missing a comma or '}' after an object member. at offset: 6"),
    (b'{"a": 1 "b": 2}', "JSON Parse error: Missing a comma or '}' after an object member. at offset: 8"),
    (b'{"a": [1, 2}', "JSON Parse error: Missing a comma or ']' after an array element. at offset: 11"),
    (b'{"a": [[1] 2]}', "JSON Parse error: Missing a comma or ']' after an array element. at offset: 11"),
    (b"[1,2", "JSON Parse error: Missing a comma or ']' after an array element. at offset: 4"),
    (b'{"a": [1, 2,]}', "JSON Parse error: Invalid value. at offset: 12"),
    (b'{"a":', "JSON Parse error: Invalid value. at offset: 5"),
    (b'{"a": }', "JSON Parse error: Invalid value. at offset: 6"),
    (b'{"a": tru}', "JSON Parse error: Invalid value. at offset: 9"),
    (b'{"a": nul}', "JSON Parse error: Invalid value. at offset: 9"),
    (b'{"a": -}', "JSON Parse error: Invalid value. at offset: 7"),
    (b"{\"a\": 'x'}", "JSON Parse error: Invalid value. at offset: 6"),
    (b'{"a": 1.}', "JSON Parse error: Miss fraction part in number. at offset: 8"),
    (b'{"a": [1e]}', "JSON Parse error: Miss exponent in number. at offset: 9"),
    (b'{"a": [1.5e+]}', "JSON Parse error: Miss exponent in number. at offset: 12"),
    (b'{"a": "abc', "JSON Parse error: Missing a closing quotation mark in string. at offset: 10"),
    (b'{"a": "ab\0c"}', "JSON Parse error: Missing a closing quotation mark in string. at offset: 9"),
    (b'{"a": "\x01"}', "JSON Parse error: Invalid escape character in string. at offset: 7"),
    (b'{"a": "\\q"}', "JSON Parse error: Invalid escape character in string. at offset: 7"),
    (b'{"a": "\\u12x4"}', "JSON Parse error: Incorrect hex digit after \\u escape in string. at offset: 7"),
    # Offsets count bytes, the skipped BOM included.
    (b'\xef\xbb\xbf{"a": x}', "JSON Parse error: Invalid value. at offset: 9"),
    ('{"é": x}'.encode(), "JSON Parse error: Invalid value. at offset: 7"),
    (b'{"a"\0: 1}', "JSON Parse error: Missing a colon after a name of object member. at offset: 4"),
    (
        b'{"a": 1' + b"0" * 5000 + b"}",
        "JSON Parse error: Number too big to be stored in double. at offset: 6",
    ),
    (
        b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "JSON Parse error: The document is nested too deeply.",
    ),
    # Deliberate deviation: rapidjson takes `Inf` (and `-Inf`, `-NaN`); Python's json does not.
    (b'{"a": [Inf]}', "JSON Parse error: Invalid value. at offset: 10"),
    # Then the document must be an object.
    (b"[1, 2.5]", "JSON Value: [1, 2.5] Is not object"),
    (b'"text"', 'JSON Value: "text" Is not object'),
    (b"null", "JSON Value: null Is not object"),
]


@pytest.mark.parametrize(("body", "message"), PARSE_ERRORS)
def test_parse_errors(body: bytes, message: str) -> None:
    for parse in (lambda: predict(body), lambda: parse_classify_regress(body, "classify")):
        error = error_of(parse)
        assert (error.code, error.message) == (Code.INVALID_ARGUMENT, message)


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [1]} trailing garbage',  # parsing stops after the first value
        b'{"instances": [1]}\0{',
        b'\xef\xbb\xbf {"instances": [1]}',
        b' \t\r\n{"instances": [1]}',
    ],
)
def test_parse_ignores_what_rapidjson_ignores(body: bytes) -> None:
    assert predict(body).inputs["default"].tolist() == [1]


# --- parsing: predict request structure ----------------------------------------------------------------

REQUEST_ERRORS = [
    (
        '{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}',
        (
            'JSON Value: {\n    "signature_name": 5,\n    "instances": [[1, 2], [3, 4], [5, 6, 7]]\n} not formatted '
            "correctly. 'signature_name' key must be a string value."
        ),
    ),
    (
        '{"instances": [[1,2]], "inputs": [[1,2]]}',
        (
            'JSON Value: {\n    "instances": [[1, 2]],\n    "inputs": [[1, 2]]\n} Not formatted correctly expecting'
            " only one of 'inputs' or 'instances' keys to exist "
        ),
    ),
    ("{}", "Missing 'inputs' or 'instances' key"),
    ('{"instance": [1]}', "Missing 'inputs' or 'instances' key"),
    ('{"instances": 5}', "JSON Value: {\n    \"instances\": 5\n} Expecting 'instances' to be an list/array"),
    (
        '{"instances": {"a": 1}}',
        (
            'JSON Value: {\n    "instances": {\n        "a": 1\n    }\n} Expecting '
            "'instances' to be an list/array"
        ),
    ),
    ('{"instances": []}', "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array"),
    # A NaN stops rapidjson's writer, and so the dump.
    ('{"instances": NaN}', "JSON Value: {\n    \"instances\":  Expecting 'instances' to be an list/array"),
]


@pytest.mark.parametrize(("body", "message"), REQUEST_ERRORS)
def test_request_errors(body: str, message: str) -> None:
    error = error_of(lambda: predict(body))
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, message)


def test_input_map_is_looked_up_after_the_signature_name() -> None:
    calls: list[str] = []

    def lookup(signature: str) -> Mapping[str, int]:
        calls.append(signature)
        raise not_found("Servable not found for request: Latest(half)")

    assert error_of(lambda: parse_predict(b"{", lookup)).message.startswith("JSON Parse error")
    assert "must be a string" in error_of(lambda: parse_predict(b'{"signature_name": 1}', lookup)).message
    assert calls == []
    error = error_of(lambda: parse_predict(b'{"signature_name": "sig"}', lookup))  # before the key checks
    assert (error.code, calls) == (Code.NOT_FOUND, ["sig"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"instances": [1]}', "Failed to get input map for signature: DEFAULT"),
        ('{"signature_name": "", "inputs": [1]}', "Failed to get input map for signature: DEFAULT"),
        (
            '{"signature_name": "get_counter", "inputs": [1]}',
            "Failed to get input map for signature: get_counter",
        ),
    ],
)
def test_signature_without_inputs(body: str, message: str) -> None:
    assert error_of(lambda: predict(body, {})).message == message


def test_signature_name_is_returned() -> None:
    assert (
        predict('{"signature_name": "predict_images", "instances": [[1,2]]}').signature_name
        == "predict_images"
    )
    assert predict('{"instances": [[1,2]]}').signature_name == ""


# --- parsing: values -----------------------------------------------------------------------------------

GOOD_REQUESTS: list[tuple[str, Mapping[str, int], Format, dict[str, Array]]] = [
    (
        '{"instances": [[1,2],[3,4],[5,6]]}',
        INT32,
        Format.ROW,
        {"default": np.array([[1, 2], [3, 4], [5, 6]], "i4")},
    ),
    ('{"instances": [1, 2, 3]}', INT32, Format.ROW, {"default": np.array([1, 2, 3], "i4")}),
    (
        '{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}',
        FLOAT,
        Format.ROW,
        {"default": np.array([1, 2, 3, 4, 5.003, 0.007, 0], "f4")},
    ),
    (
        '{"instances": [1.0, 2, 0.662, 0]}',
        {"d": D.DT_DOUBLE},
        Format.ROW,
        {"d": np.array([1, 2, 0.662, 0], "f8")},
    ),
    # b/181409782: an integer and the same number written as a float give the same (rounded) float.
    ('{"instances": [1435774380]}', FLOAT, Format.ROW, {"default": np.array([1435774380], "f4")}),
    ('{"instances": [1435774380.0]}', FLOAT, Format.ROW, {"default": np.array([1435774380], "f4")}),
    (
        '{"instances": [1.7976931348623157e308, -1e300]}',
        FLOAT,
        Format.ROW,
        {"default": np.array([np.inf, -np.inf], "f4")},
    ),
    ('{"instances": [2.2250738585072014e-308]}', FLOAT, Format.ROW, {"default": np.array([0.0], "f4")}),
    (
        '{"instances": [NaN, Infinity, -Infinity]}',
        FLOAT,
        Format.ROW,
        {"default": np.array([np.nan, np.inf, -np.inf], "f4")},
    ),
    ('{"instances": [18446744073709551615]}', FLOAT, Format.ROW, {"default": np.array([2.0**64], "f4")}),
    # Beyond the double range: +-inf (deliberate deviation: rapidjson refuses the number).
    (
        '{"inputs": [1' + "0" * 400 + ", -1" + "0" * 400 + ", 1e400, 2]}",
        {"d": D.DT_DOUBLE},
        Format.COLUMNAR,
        {"d": np.array([np.inf, -np.inf, np.inf, 2])},
    ),
    (
        '{"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]}',
        STRING,
        Format.ROW,
        {"default": strings(b"hello", b"world")},
    ),
    (
        '{"instances": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}',
        STRING,
        Format.ROW,
        {"default": strings(b"hello", b"world").reshape(2, 1)},
    ),
    (
        '{"instances": [{"default": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}]}',
        STRING,
        Format.ROW,
        {"default": strings(b"hello", b"world").reshape(1, 2, 1)},
    ),
    (
        """{"instances": [
            {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"], "float_tensor": [1.0, NaN],
             "dbl_tensor": [NaN]},
            {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"], "float_tensor": [2.0, Infinity],
             "dbl_tensor": [2.0]}]}""",
        {
            "int_tensor": D.DT_INT32,
            "str_tensor": D.DT_STRING,
            "float_tensor": D.DT_FLOAT,
            "dbl_tensor": D.DT_DOUBLE,
        },
        Format.ROW,
        {
            "int_tensor": np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], "i4"),
            "str_tensor": strings(b"foo", b"bar", b"baz", b"bat").reshape(2, 2),
            "float_tensor": np.array([[1, np.nan], [2, np.inf]], "f4"),
            "dbl_tensor": np.array([[np.nan], [2.0]], "f8"),
        },
    ),
    (
        '{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}',
        {"int_tensor": D.DT_INT32},
        Format.COLUMNAR,
        {"int_tensor": np.array([[[1, 2], [3, 4], [5, 6]]], "i4")},
    ),
    (
        '{"inputs": [[[1,2],[3,4],[5,6]]]}',
        {"int_tensor": D.DT_INT32},
        Format.COLUMNAR,
        {"int_tensor": np.array([[[1, 2], [3, 4], [5, 6]]], "i4")},
    ),
    (
        (
            '{"inputs": {"int_tensor": [[1,2]], "str_tensor": ["foo", "bar"], "bin_tensor": {"b64": "aGVsbG8="},'
            ' "ignored": 1}}'
        ),
        {"int_tensor": D.DT_INT32, "str_tensor": D.DT_STRING, "bin_tensor": D.DT_STRING},
        Format.COLUMNAR,
        {
            "int_tensor": np.array([[1, 2]], "i4"),
            "str_tensor": strings(b"foo", b"bar"),
            "bin_tensor": np.array(b"hello", dtype=object),
        },
    ),
    ('{"inputs": 2.5}', FLOAT, Format.COLUMNAR, {"default": np.array(2.5, "f4")}),
    ('{"inputs": []}', FLOAT, Format.COLUMNAR, {"default": np.zeros(0, "f4")}),
    ('{"inputs": [[], []]}', INT32, Format.COLUMNAR, {"default": np.zeros((2, 0), "i4")}),
    ('{"inputs": []}', {"h": D.DT_HALF}, Format.COLUMNAR, {"h": np.zeros(0, "f2")}),
    ('{"instances": [true, false]}', {"b": D.DT_BOOL}, Format.ROW, {"b": np.array([True, False])}),
    # INT8/INT16/UINT8 take any int32 and wrap, as TF's TensorProto int_val -> int8 copy does.
    ('{"inputs": [300, -1, 255]}', {"u": D.DT_UINT8}, Format.COLUMNAR, {"u": np.array([44, 255, 255], "u1")}),
    ('{"inputs": [-129, 127]}', {"i": D.DT_INT8}, Format.COLUMNAR, {"i": np.array([127, 127], "i1")}),
    ('{"inputs": [70000]}', {"i": D.DT_INT16}, Format.COLUMNAR, {"i": np.array([4464], "i2")}),
    (
        '{"inputs": [-9223372036854775808, 9223372036854775807]}',
        {"i": D.DT_INT64},
        Format.COLUMNAR,
        {"i": np.array([-(2**63), 2**63 - 1], "i8")},
    ),
    (
        '{"inputs": [0, 4294967295]}',
        {"u": D.DT_UINT32},
        Format.COLUMNAR,
        {"u": np.array([0, 2**32 - 1], "u4")},
    ),
    (
        '{"inputs": [18446744073709551615]}',
        {"u": D.DT_UINT64},
        Format.COLUMNAR,
        {"u": np.array([2**64 - 1], "u8")},
    ),
    # Strings are the bytes sent: UTF-8 as such, and bytes that are not UTF-8 too (rapidjson does not check).
    (
        '{"inputs": ["h\\u00e9", "\\ud83d\\ude00", ""]}',
        STRING,
        Format.COLUMNAR,
        {"default": strings("hé".encode(), "😀".encode(), b"")},
    ),
    (
        b'{"inputs": ["\xff\xfe", "ok"]}'.decode("latin-1"),
        STRING,
        Format.COLUMNAR,
        {"default": strings(b"\xc3\xbf\xc3\xbe", b"ok")},
    ),
]


@pytest.mark.parametrize(("body", "mapping", "fmt", "expected"), GOOD_REQUESTS)
def test_good_requests(
    body: str, mapping: Mapping[str, int], fmt: Format, expected: dict[str, Array]
) -> None:
    request = predict(body, mapping)
    assert request.format is fmt
    assert sorted(request.inputs) == sorted(expected)
    for name, want in expected.items():
        got = request.inputs[name]
        assert (got.dtype, got.shape) == (want.dtype, want.shape), name
        if want.dtype == object:
            assert got.tolist() == want.tolist()
        else:
            np.testing.assert_array_equal(got, want)


def test_raw_bytes_in_strings_are_kept() -> None:
    request = predict(b'{"inputs": ["\xff\xfe", {"b64": "/w=="}]}', STRING)
    assert request.inputs["default"].tolist() == [b"\xff\xfe", b"\xff"]


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("aGVsbG8=", b"hello"),
        ("aGVsbG8", b"hello"),  # absl accepts missing padding
        ("aGVs bG8=\n", b"hello"),  # and ignores whitespace
        ("aGVsbG8.", b"hello"),  # and takes '.' as padding
        ("", b""),
        ("aGk=", b"hi"),
        ("aGVsbG8==", None),
        ("aGVsbG8=x", None),
        ("a", None),
        ("aGVsbG8=aGk=", None),
        ("-_-_", None),  # web-safe alphabet is not base64 here
        ("aGVs!G8=", None),
    ],
)
def test_base64(encoded: str, decoded: bytes | None) -> None:
    body = json.dumps({"inputs": {"b64": encoded}})
    if decoded is None:
        assert error_of(lambda: predict(body, STRING)).message == "Unable to base64 decode"
    else:
        assert predict(body, STRING).inputs["default"].tolist() == decoded


MULTI = {"int_tensor": D.DT_INT32, "str_tensor": D.DT_STRING}
ROW_ERRORS: list[tuple[str, Mapping[str, int], str]] = [
    (
        '{"instances": [[1,2],[3,4],[5,6,7]]}',
        INT32,
        (
            "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but "
            "got: 3"
        ),
    ),
    (
        '{"instances": [[1,2],[3,4],[[5,6]]]}',
        INT32,
        (
            "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape [2] but got: "
            "[1,2]"
        ),
    ),
    (
        '{"instances": [1, [1]]}',
        INT32,
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape [] but got: [1]",
    ),
    (
        '{"instances": [[1,2],["a", "b"]]}',
        INT32,
        (
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: \"a\" Type: String "
            "is not of expected type: int32"
        ),
    ),
    (
        '{"instances": [[1,2],[3]]}',
        INT32,
        (
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but "
            "got: 1"
        ),
    ),
    (
        '{"instances": [[[1,2],[3]]]}',
        INT32,
        (
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: Encountered list at unexpected "
            "size: 1 at level: 1 expected size: 2"
        ),
    ),
    (
        '{"instances": [1.0]}',
        INT32,
        (
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: 1.0 Type: Number is "
            "not of expected type: int32"
        ),
    ),
    (
        '{"instances": [2147483648]}',
        INT32,
        (
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: 2147483648 Type: "
            "Number is not of expected type: int32"
        ),
    ),
    (
        '{"instances": [true]}',
        INT32,
        (
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: true Type: True is "
            "not of expected type: int32"
        ),
    ),
    (
        '{"instances": [null]}',
        FLOAT,
        (
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: null Type: Null is "
            "not of expected type: float"
        ),
    ),
    (
        '{"instances": [1]}',
        {"b": D.DT_BOOL},
        (
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: 1 Type: Number is "
            "not of expected type: bool"
        ),
    ),
    (
        '{"instances": [-1]}',
        {"u": D.DT_UINT64},
        (
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: -1 Type: Number is "
            "not of expected type: uint64"
        ),
    ),
    (
        '{"instances": [1.5]}',
        {"h": D.DT_HALF},
        (
            "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: Conversion of JSON Value: 1.5 to "
            "type: half"
        ),
    ),
    (
        '{"instances": [{"int_tensor": [[1,2]], "str_tensor": ["a"]}, {"int_tensor": [[[7,8]]], "str_tensor": ["b"]}]}',
        MULTI,
        (
            "Failed to process element: 1 key: int_tensor of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape "
            "[1,2] but got: [1,1,2]"
        ),
    ),
    (
        '{"instances": [{"int_tensor": [[1,2],[3,4]], "str_tensor": ["a"]}, {"int_tensor": [[7,8]], "str_tensor": ["b"]}]}',
        MULTI,
        (
            "Failed to process element: 1 key: int_tensor of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor "
            "size: 4 but got: 2"
        ),
    ),
    (
        '{"instances": [{"int_tensor": [1], "str_tensor": ["a"]}, [1, 20, 30]]}',
        MULTI,
        "Expecting object but got list at item 1 of input list",
    ),
    (
        '{"instances": [{"int_tensor": [1], "str_tensor": ["a"]}, {"b64": "aGk="}]}',
        MULTI,
        "Expecting object but got list at item 1 of input list",
    ),
    (
        '{"instances": [["baz", "bar"], {"str_tensor": ["baz", "bat"]}]}',
        {"str_tensor": D.DT_STRING},
        "Expecting value/list but got object at item 1 of input list",
    ),
    (
        '{"instances": [{"int_tensor": [1]}]}',
        MULTI,
        (
            "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"int_tensor\": [1]\n} keys must be "
            "equal to: int_tensor,str_tensor"
        ),
    ),
    (
        '{"instances": [{"int_tensor": [1], "str_tensor": ["a"], "other": 1}]}',
        MULTI,
        (
            "Failed to process element: 0 key: other of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does not "
            "have named input: other"
        ),
    ),
    (
        '{"instances": [{"int_tensor": [1], "str_tensor": [{"b64": "%"}]}]}',
        MULTI,
        (
            "Failed to process element: 0 key: str_tensor of 'instances' list. Error: INVALID_ARGUMENT: Unable to base64 "
            "decode"
        ),
    ),
    (
        '{"instances": [[1], [2]]}',
        MULTI,
        (
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
            "tensorinfo_map"
        ),
    ),
]


@pytest.mark.parametrize(("body", "mapping", "message"), ROW_ERRORS)
def test_row_errors(body: str, mapping: Mapping[str, int], message: str) -> None:
    error = error_of(lambda: predict(body, mapping))
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, message)


COLUMNAR_ERRORS: list[tuple[str, Mapping[str, int], Code, str]] = [
    (
        '{"inputs": [1, 2]}',
        MULTI,
        Code.INVALID_ARGUMENT,
        (
            "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
            "tensorinfo_map"
        ),
    ),
    (
        '{"inputs": {"b64": "aGk="}}',
        MULTI,
        Code.INVALID_ARGUMENT,
        (
            "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
            "tensorinfo_map"
        ),
    ),
    (
        '{"inputs": {"int_tensor": [1]}}',
        MULTI,
        Code.INVALID_ARGUMENT,
        "Missing named input: str_tensor in 'inputs' object.",
    ),
    ('{"inputs": {}}', INT32, Code.INVALID_ARGUMENT, "Missing named input: default in 'inputs' object."),
    (
        '{"inputs": [[1,2],[3]]}',
        INT32,
        Code.INVALID_ARGUMENT,
        "Encountered list at unexpected size: 1 at level: 1 expected size: 2",
    ),
    (
        '{"inputs": [[1,2],3]}',
        INT32,
        Code.INVALID_ARGUMENT,
        "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
    ),
    (
        '{"inputs": [[1,2],[3,[4]]]}',
        INT32,
        Code.INVALID_ARGUMENT,
        "Encountered list at unexpected level: 2 expected < 2",
    ),
    (
        '{"inputs": [[[]], [5]]}',
        INT32,
        Code.INVALID_ARGUMENT,
        "JSON Value: 5 found at incorrect level: 3 in the JSON DOM. Expected at level: 3",
    ),
    # The first error in document order wins.
    (
        '{"inputs": [["a"], [1, 2]]}',
        INT32,
        Code.INVALID_ARGUMENT,
        'JSON Value: "a" Type: String is not of expected type: int32',
    ),
    (
        '{"inputs": [[1], [1, 2], ["a"]]}',
        INT32,
        Code.INVALID_ARGUMENT,
        "Encountered list at unexpected size: 2 at level: 1 expected size: 1",
    ),
    (
        '{"inputs": [1, NaN]}',
        INT32,
        Code.INVALID_ARGUMENT,
        "JSON Value:  Type: Number is not of expected type: int32",
    ),
    (
        '{"inputs": {"b64": "aGVsbG8="}}',
        FLOAT,
        Code.INVALID_ARGUMENT,
        'JSON Value: {\n    "b64": "aGVsbG8="\n} Type: Object is not of expected type: float',
    ),
    (
        '{"inputs": [{"b64": "aGk", "x": 1}]}',
        STRING,
        Code.INVALID_ARGUMENT,
        'JSON Value: {\n    "b64": "aGk",\n    "x": 1\n} not formatted correctly for base64 data',
    ),
    (
        '{"inputs": [{"b64": 5}]}',
        STRING,
        Code.INVALID_ARGUMENT,
        'JSON Value: {\n    "b64": 5\n} not formatted correctly for base64 data',
    ),
    (
        '{"inputs": [5]}',
        STRING,
        Code.INVALID_ARGUMENT,
        "JSON Value: 5 Type: Number is not of expected type: string",
    ),
    # Unsupported dtypes keep their code (HTTP 501) in the columnar format.
    (
        '{"inputs": [1.5]}',
        {"h": D.DT_HALF},
        Code.UNIMPLEMENTED,
        "Conversion of JSON Value: 1.5 to type: half",
    ),
    (
        '{"inputs": 1}',
        {"c": D.DT_COMPLEX64},
        Code.UNIMPLEMENTED,
        "Conversion of JSON Value: 1 to type: complex64",
    ),
    (
        '{"inputs": [{"a": 1}]}',
        {"h": D.DT_HALF},
        Code.INVALID_ARGUMENT,
        'JSON Value: {\n    "a": 1\n} Type: Object is not of expected type: half',
    ),
    (
        '{"inputs": []}',
        {"r": D.DT_RESOURCE},
        Code.UNIMPLEMENTED,
        "Conversion of JSON Value: [] to type: resource",
    ),
    # Beyond numpy's 64 dimensions.
    (
        '{"inputs": ' + "[" * 65 + "1" + "]" * 65 + "}",
        INT32,
        Code.INVALID_ARGUMENT,
        "JSON Value: "
        + "[" * 65
        + "1"
        + "]" * 65
        + " is nested deeper than 64 levels; tensors of more than 64 "
        "dimensions are not supported",
    ),
]


@pytest.mark.parametrize(("body", "mapping", "code", "message"), COLUMNAR_ERRORS)
def test_columnar_errors(body: str, mapping: Mapping[str, int], code: Code, message: str) -> None:
    error = error_of(lambda: predict(body, mapping))
    assert (error.code, error.message) == (code, message)


def test_row_rank_limit_counts_the_batch_dimension() -> None:
    assert predict('{"instances": [' + "[" * 62 + "1" + "]" * 62 + "]}").inputs["default"].ndim == 63
    assert predict('{"instances": [' + "[" * 63 + "1" + "]" * 63 + "]}").inputs["default"].ndim == 64
    assert (
        "nested deeper than 63"
        in error_of(lambda: predict('{"instances": [' + "[" * 64 + "1" + "]" * 64 + "]}")).message
    )


def test_debug_string_is_cut_after_256_bytes() -> None:
    text = debug_string({"instances": list(range(200))})
    assert text.startswith('{\n    "instances": [0, 1, 2, ')
    assert not text.endswith("]\n}")
    assert 256 <= len(text) < 262
    assert debug_string([1.5, 1e-7, 1e21, 1e20, -0.0, 123456789012345678901234.0, 0.001]) == (
        "[1.5, 1e-7, 1e21, 100000000000000000000.0, -0.0, 1.2345678901234569e23, 0.001]"
    )


# --- formatting predict responses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "is_double", "text"),
    [
        (2.5, False, "2.5"),
        (3.0, False, "3.0"),
        (4.5, True, "4.5"),
        (1e-05, False, "1e-05"),
        (1e-05, True, "1e-05"),
        (0.1, False, "0.1"),
        (0.1, True, "0.1"),
        (1 / 3, False, "0.333333343"),
        (1 / 3, True, "0.33333333333333331"),
        (9000000.0, False, "9e+06"),
        (999999.0, False, "999999.0"),
        (0.0003, False, "0.0003"),
        (555557.5, False, "555557.5"),
        (16777217.0, False, "16777216.0"),
        (123456789.0, True, "123456789.0"),
        (1e20, True, "1e+20"),
        (2.0**60, True, "1.152921504606847e+18"),
        (2.0**50, True, "1125899906842624.0"),
        (0.0, False, "0.0"),
        (-0.0, True, "-0.0"),
        (-2.5, True, "-2.5"),
        (math.nan, False, "NaN"),
        (math.inf, True, "Infinity"),
        (-math.inf, False, "-Infinity"),
        (1e300, False, "Infinity"),  # beyond float range
        (3.4028234663852886e38, False, "3.40282347e+38"),
    ],
)
def test_write_decimal(value: float, is_double: bool, text: str) -> None:
    assert write_decimal(value, is_double) == text


@given(st.lists(st.floats(width=32), min_size=1, max_size=20), st.booleans())
def test_array_floats_are_written_like_write_decimal(values: list[float], is_double: bool) -> None:
    dtype = D.DT_DOUBLE if is_double else D.DT_FLOAT
    out = format_predict(
        {"y": np.array(values, "f8" if is_double else "f4")}, {"y": dtype}, Format.ROW
    ).decode()
    expected = ", ".join(write_decimal(v, is_double) for v in values)
    assert out == '{\n    "predictions": [' + expected + "\n    ]\n}"


INT_TENSOR = np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], "i4")
FORMATTED: list[tuple[dict[str, Array], dict[str, int], Format, str]] = [
    (
        {"y": np.array([2.5, 3.0, 4.5], "f4")},
        {"y": D.DT_FLOAT},
        Format.ROW,
        '{\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}',
    ),
    (
        {"y": np.array([[2.5], [3.0], [4.5]], "f4")},
        {"y": D.DT_FLOAT},
        Format.ROW,
        '{\n    "predictions": [[2.5], [3.0], [4.5]\n    ]\n}',
    ),
    (
        {"int_tensor": INT_TENSOR},
        {"int_tensor": D.DT_INT32},
        Format.ROW,
        '{\n    "predictions": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]\n    ]\n}',
    ),
    (
        {"float_tensor": np.array([[9000000, 999999, 0.5], [0.0003, 0.00003, 555557.5]], "f4")},
        {"float_tensor": D.DT_FLOAT},
        Format.ROW,
        '{\n    "predictions": [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]\n    ]\n}',
    ),
    (
        {"float_tensor": np.array([[np.nan, np.inf], [3, -np.inf]], "f4")},
        {"float_tensor": D.DT_FLOAT},
        Format.ROW,
        '{\n    "predictions": [[NaN, Infinity], [3.0, -Infinity]\n    ]\n}',
    ),
    (
        {"t_bytes": strings(b"hello", b"tf")},
        {"t_bytes": D.DT_STRING},
        Format.ROW,
        (
            '{\n    "predictions": [{\n            "b64": "aGVsbG8="\n        }, {\n            "b64": "dGY="\n        }\n'
            "    ]\n}"
        ),
    ),
    (
        {"a": np.array([1, 2], "i8"), "b": np.array([[True], [False]])},
        {"a": D.DT_INT64, "b": D.DT_BOOL},
        Format.ROW,
        (
            '{\n    "predictions": [\n        {\n            "a": 1,\n            "b": [true]\n        },\n        {\n'
            '            "a": 2,\n            "b": [false]\n        }\n    ]\n}'
        ),
    ),
    ({"a": np.zeros((0, 2), "i4")}, {"a": D.DT_INT32}, Format.ROW, '{\n    "predictions": []\n}'),
    (
        {"s": strings(), "f": np.zeros((0, 3, 4), "f4")},
        {"s": D.DT_STRING, "f": D.DT_FLOAT},
        Format.ROW,
        '{\n    "predictions": []\n}',
    ),
    (
        {"y": np.array([[1.5, 2.0]], "f8")},
        {"y": D.DT_DOUBLE},
        Format.COLUMNAR,
        '{\n    "outputs": [\n        [\n            1.5,\n            2.0\n        ]\n    ]\n}',
    ),
    ({"y": np.array(3.0, "f4")}, {"y": D.DT_FLOAT}, Format.COLUMNAR, '{\n    "outputs": 3.0\n}'),
    ({"y": np.zeros(0, "f4")}, {"y": D.DT_FLOAT}, Format.COLUMNAR, '{\n    "outputs": []\n}'),
    (
        {"a": np.array([1], "u8"), "s": strings("é".encode(), b'"\n\x1f\xff')},
        {"a": D.DT_UINT64, "s": D.DT_STRING},
        Format.COLUMNAR,
        (
            '{\n    "outputs": {\n        "a": [\n            1\n        ],\n        "s": [\n            "é",\n'
            '            "\\"\\n\\u001F\ufffd"\n        ]\n    }\n}'
        ),
    ),
    (
        {"x_bytes": np.array(b"\xff", dtype=object)},
        {"x_bytes": D.DT_STRING},
        Format.COLUMNAR,
        '{\n    "outputs": {\n        "b64": "/w=="\n    }\n}',
    ),
]


@pytest.mark.parametrize(("outputs", "dtypes", "fmt", "text"), FORMATTED)
def test_format_predict(outputs: dict[str, Array], dtypes: dict[str, int], fmt: Format, text: str) -> None:
    assert format_predict(outputs, dtypes, fmt).decode() == text


def test_format_predict_several_outputs() -> None:
    outputs = {
        "int_tensor": INT_TENSOR,
        "str_tensor": strings(b"foo", b"bar", b"baz", b"bat").reshape(2, 2),
        "float_tensor": np.array([[1.0], [2.0]], "f4"),
        "double_scalar_tensor": np.array([8.0, 9.0], "f8"),
        "str_tensor_bytes": strings(b"hello", b"world", b"tf", b"serving").reshape(2, 2),
    }
    dtypes = {
        "int_tensor": D.DT_INT32,
        "str_tensor": D.DT_STRING,
        "float_tensor": D.DT_FLOAT,
        "double_scalar_tensor": D.DT_DOUBLE,
        "str_tensor_bytes": D.DT_STRING,
    }
    rows = json.loads(format_predict(outputs, dtypes, Format.ROW))
    assert rows == {
        "predictions": [
            {
                "double_scalar_tensor": 8.0,
                "float_tensor": [1.0],
                "int_tensor": [[1, 2], [3, 4], [5, 6]],
                "str_tensor": ["foo", "bar"],
                "str_tensor_bytes": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
            },
            {
                "double_scalar_tensor": 9.0,
                "float_tensor": [2.0],
                "int_tensor": [[7, 8], [9, 0], [1, 2]],
                "str_tensor": ["baz", "bat"],
                "str_tensor_bytes": [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
            },
        ]
    }
    columns = json.loads(format_predict(outputs, dtypes, Format.COLUMNAR))
    assert columns == {
        "outputs": {
            "double_scalar_tensor": [8.0, 9.0],
            "float_tensor": [[1.0], [2.0]],
            "int_tensor": INT_TENSOR.tolist(),
            "str_tensor": [["foo", "bar"], ["baz", "bat"]],
            "str_tensor_bytes": [
                [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
                [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
            ],
        }
    }


@pytest.mark.parametrize(
    ("outputs", "dtypes", "fmt", "message"),
    [
        ({}, {}, Format.ROW, "Cannot convert empty tensor map to JSON"),
        ({}, {}, Format.COLUMNAR, "Cannot convert empty tensor map to JSON"),
        (
            {"tensor": np.array([1, 2], "c8")},
            {"tensor": D.DT_COMPLEX64},
            Format.ROW,
            "Failed to write JSON value for tensor type: complex64",
        ),
        (
            {"tensor": np.array([1], "f2")},
            {"tensor": D.DT_HALF},
            Format.COLUMNAR,
            "Failed to write JSON value for tensor type: half",
        ),
        (
            {"tensor": np.array(1, "i4")},
            {"tensor": D.DT_INT32},
            Format.ROW,
            "Tensor name: tensor has no shape information ",
        ),
        (
            {
                "int_tensor": np.zeros((2, 3), "i4"),
                "str_tensor": strings(b"foo", b"bar", b"baz").reshape(1, 3),
            },
            {"int_tensor": D.DT_INT32, "str_tensor": D.DT_STRING},
            Format.ROW,
            "Tensor name: str_tensor has inconsistent batch size: 1 expecting: 2",
        ),
        (
            {"int_tensor": np.zeros((0, 2), "i4"), "str_tensor": strings(b"foo", b"bar").reshape(1, 2)},
            {"int_tensor": D.DT_INT32, "str_tensor": D.DT_STRING},
            Format.ROW,
            "Tensor name: str_tensor has inconsistent batch size: 1 expecting: 0",
        ),
    ],
)
def test_format_predict_errors(
    outputs: dict[str, Array], dtypes: dict[str, int], fmt: Format, message: str
) -> None:
    error = error_of(lambda: format_predict(outputs, dtypes, fmt))
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, message)


def test_empty_tensors_of_unwritable_types_are_written() -> None:  # TF Serving fails only on a value
    assert (
        format_predict({"c": np.zeros((0, 2), "c8")}, {"c": D.DT_COMPLEX64}, Format.ROW)
        == b'{\n    "predictions": []\n}'
    )


def test_half_plus_two_round_trip() -> None:
    request = predict('{"instances": [1.0, 2.0, 5.0]}', {"x": D.DT_FLOAT})
    y = request.inputs["x"] * np.float32(0.5) + np.float32(2)
    assert (
        format_predict({"y": y}, {"y": D.DT_FLOAT}, request.format)
        == b'{\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}'
    )


# Sides of at least 1: JSON `[]` has shape [0], so a shape like [0, 3] cannot be written.
float_tensors = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=3).flatmap(
    lambda shape: hnp.arrays(np.float64, shape, elements=st.floats())
)


@settings(max_examples=200)
@given(float_tensors, st.booleans())
def test_columnar_float_round_trip(values: Array, is_double: bool) -> None:
    dtype = D.DT_DOUBLE if is_double else D.DT_FLOAT
    body = json.dumps({"inputs": {"x": values.tolist()}})
    request = predict(body, {"x": dtype})
    out = json.loads(format_predict({"y": request.inputs["x"]}, {"y": dtype}, request.format))["outputs"]
    with np.errstate(over="ignore"):
        expected = values if is_double else values.astype(np.float32)
        got = np.array(out, dtype=expected.dtype)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=40),
        st.text(alphabet='{}[]",:0123456789.eE+-tfnaulrsNIy b\\', max_size=40).map(str.encode),
    )
)
def test_any_body_gives_a_request_or_invalid_argument(body: bytes) -> None:
    for call in (
        lambda: predict(b'{"inputs": ' + body + b"}", {"a": D.DT_FLOAT, "b": D.DT_STRING}),
        lambda: predict(body, FLOAT),
        lambda: parse_classify_regress(b'{"examples": [{"f": ' + body + b"}]}", "classify"),
    ):
        try:
            call()
        except ServingError as e:
            code = e.code
        else:
            code = Code.INVALID_ARGUMENT
        assert code is Code.INVALID_ARGUMENT


# --- error bodies --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "body"),
    [
        (
            "Servable not found for request: Latest(half)",
            '{\n    "error": "Servable not found for request: Latest(half)"\n}',
        ),
        ('a "quoted"\\ \n\t\x1f/é', '{\n    "error": "a \\"quoted\\"\\\\ \\n\\t\\u001F/é"\n}'),
        ("raw \udcff byte", '{\n    "error": "raw ? byte"\n}'),
    ],
)
def test_format_error(message: str, body: str) -> None:
    assert format_error(message) == body.encode()


# --- classify / regress --------------------------------------------------------------------------------


def make_input(text: str) -> input_pb2.Input:
    return text_format.Parse(text, input_pb2.Input())


def test_classify_request_without_context() -> None:
    body = b"""{"examples": [{"names": ["foo", "bar"], "ratings": [8.0, 9.0], "age": 20},
                              {"names": ["baz"], "ratings": 6.0}]}"""
    for method in ("classify", "regress"):
        assert parse_classify_regress(body, method) == (
            "",
            make_input("""
            example_list {
              examples { features {
                feature { key: "names" value { bytes_list { value: "foo" value: "bar" } } }
                feature { key: "ratings" value { float_list { value: 8.0 value: 9.0 } } }
                feature { key: "age" value { int64_list { value: 20 } } } } }
              examples { features {
                feature { key: "names" value { bytes_list { value: "baz" } } }
                feature { key: "ratings" value { float_list { value: 6.0 } } } } }
            }"""),
        )


def test_classify_request_with_context() -> None:
    body = b"""{
      "signature_name": "custom_signture",
      "context": {"query": "pizza", "location": ["sfo"]},
      "examples": [
        {"names": ["foo", "bar"], "ratings": [8.0, 9.0, Infinity], "age": 20},
        {"names": ["baz", {"b64": "aGVsbG8="}], "ratings": 6.0, "intboolmix": [1, true, false]},
        {"names": "bar", "ratings": -Infinity, "empty": []},
        {}
      ]}"""
    name, request_input = parse_classify_regress(body, "regress")
    assert name == "custom_signture"
    assert request_input == make_input("""
        example_list_with_context {
          context { features {
            feature { key: "query" value { bytes_list { value: "pizza" } } }
            feature { key: "location" value { bytes_list { value: "sfo" } } } } }
          examples { features {
            feature { key: "names" value { bytes_list { value: "foo" value: "bar" } } }
            feature { key: "ratings" value { float_list { value: 8.0 value: 9.0 value: inf } } }
            feature { key: "age" value { int64_list { value: 20 } } } } }
          examples { features {
            feature { key: "names" value { bytes_list { value: "baz" value: "hello" } } }
            feature { key: "ratings" value { float_list { value: 6.0 } } }
            feature { key: "intboolmix" value { int64_list { value: 1 value: 1 value: 0 } } } } }
          examples { features {
            feature { key: "names" value { bytes_list { value: "bar" } } }
            feature { key: "ratings" value { float_list { value: -inf } } }
            feature { key: "empty" value { } } } }
          examples { }
        }""")
    assert request_input.example_list_with_context.examples[3].SerializeToString() == b""


def test_empty_context_still_selects_example_list_with_context() -> None:
    _, request_input = parse_classify_regress(b'{"context": {}, "examples": [{"x": 1}]}', "classify")
    assert request_input.WhichOneof("kind") == "example_list_with_context"


@pytest.mark.parametrize(
    ("value", "kind", "values"),
    [
        ("2", "int64_list", [2]),  # JSON `2` and `2.0` differ: int64 vs float features
        ("2.0", "float_list", [2.0]),
        ("2e0", "float_list", [2.0]),
        ("-9223372036854775808", "int64_list", [-(2**63)]),
        ("18446744073709551616", "float_list", [2.0**64]),  # beyond uint64: a double for rapidjson
        ("[true, false, 3]", "int64_list", [1, 0, 3]),
        ("0.1", "float_list", [np.float32(0.1).item()]),
        ("1e300", "float_list", [math.inf]),
        ("-1" + "0" * 400, "float_list", [-math.inf]),
        ('"text"', "bytes_list", [b"text"]),
        ('["\\u00e9", {"b64": "/w=="}]', "bytes_list", ["é".encode(), b"\xff"]),
    ],
)
def test_feature_kinds(value: str, kind: str, values: list[Any]) -> None:
    _, request_input = parse_classify_regress(b'{"examples": [{"f": ' + value.encode() + b"}]}", "classify")
    feature = request_input.example_list.examples[0].features.feature["f"]
    assert feature.WhichOneof("kind") == kind
    assert list(getattr(feature, kind).value) == values


def test_nan_feature() -> None:
    _, request_input = parse_classify_regress(b'{"examples": [{"f": NaN}]}', "classify")
    assert math.isnan(request_input.example_list.examples[0].features.feature["f"].float_list.value[0])


EXAMPLE_ERRORS = [
    (
        '{"signature_name": ["hello"], "examples": [{"names": ["foo", "bar"]}]}',
        (
            'JSON Value: {\n    "signature_name": ["hello"],\n    "examples": [{\n            "names": ["foo", "bar"]\n'
            "        }]\n} not formatted correctly. 'signature_name' key must be a string value."
        ),
    ),
    ('{"context": [{"names": ["foo", "bar"]}]}', "Example must be JSON object but got JSON Array"),
    (
        '{"context": {"a": 1}}',
        (
            'JSON Value: {\n    "context": {\n        "a": 1\n    }\n} When method is classify, key \'examples\' is expected '
            "and was not found"
        ),
    ),
    (
        '{"examples": {"names": ["foo", "bar"]}}',
        (
            'JSON Value: {\n    "examples": {\n        "names": ["foo", "bar"]\n    }\n} Expecting \'examples\' value to '
            "be an list/array"
        ),
    ),
    ('{"examples": []}', "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array"),
    ('{"examples": [[{"names": ["foo", "bar"]}]]}', "Example must be JSON object but got JSON Array"),
    ('{"examples": [5]}', "Example must be JSON object but got JSON Number"),
    ('{"examples": [{"names": [10, null]}]}', "Feature: names has element with unexpected JSON type: Null"),
    (
        '{"examples": [{"names": [10, 10.0]}]}',
        "Unexpected element type in feature: names expecting type: int64",
    ),
    (
        '{"examples": [{"names": [10.5, "a"]}]}',
        "Unexpected element type in feature: names expecting type: float",
    ),
    (
        '{"examples": [{"names": ["a", true]}]}',
        "Unexpected element type in feature: names expecting type: bytes",
    ),
    (
        '{"examples": [{"names": [1.5, {"b64": "%"}]}]}',
        "Unexpected element type in feature: names expecting type: float",
    ),
    (
        '{"examples": [{"names": [10, {"test": 10}]}]}',
        "Feature: names has element with unexpected JSON type: Object",
    ),
    ('{"examples": [{"names": [[10], 20]}]}', "Feature: names has element with unexpected JSON type: Array"),
    (
        '{"examples": [{"names": [20, 18446744073709551603]}]}',
        "Feature: names has uint64_t element. Only int64_t is supported.",
    ),
    (
        '{"examples": [{"names": [1.5, 18446744073709551603]}]}',
        "Unexpected element type in feature: names expecting type: float",
    ),
    ('{"examples": [{"names": {"b64": "a"}}]}', "Unable to base64 decode"),
    ('{"examples": [{"names": null}]}', "Feature: names has element with unexpected JSON type: Null"),
]


@pytest.mark.parametrize(("body", "message"), EXAMPLE_ERRORS)
@pytest.mark.parametrize("method", ["classify", "regress"])
def test_classify_regress_errors(body: str, message: str, method: str) -> None:
    error = error_of(lambda: parse_classify_regress(body.encode(), method))
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, message)


def test_classify_regress_method_is_checked() -> None:
    with pytest.raises(ValueError, match="predict"):
        parse_classify_regress(b"{}", "predict")


def test_format_classify() -> None:
    result = text_format.Parse(
        """classifications { classes { label: "car" score: 0.2 } classes { label: "bike" score: 0.7 }
                             classes { label: "bus" score: 0.1 } }
           classifications { classes { label: "car" score: 0.7 } classes { label: "bike" score: 0.1 }
                             classes { label: "bus" score: 0.2 } }
           classifications { classes { score: 3.0 } }
           classifications { }""",
        classification_pb2.ClassificationResult(),
    )
    assert format_classify(result).decode() == (
        '{\n    "results": [[["car", 0.2], ["bike", 0.7], ["bus", 0.1]], [["car", 0.7], ["bike", 0.1], ["bus", 0.2]], '
        '[["", 3.0]], []\n    ]\n}'
    )


def test_format_regress() -> None:
    result = text_format.Parse(
        "regressions { value: 0.2 } regressions { value: inf } regressions { value: 1.0 } "
        "regressions { value: -inf } regressions { value: nan }",
        regression_pb2.RegressionResult(),
    )
    assert format_regress(result) == b'{\n    "results": [0.2, Infinity, 1.0, -Infinity, NaN]\n}'


def test_empty_results() -> None:
    assert error_of(lambda: format_classify(classification_pb2.ClassificationResult())).message == (
        "Cannot convert empty ClassificationResults to JSON"
    )
    assert error_of(lambda: format_regress(regression_pb2.RegressionResult())).message == (
        "Cannot convert empty RegressionResults to JSON"
    )


# --- GET bodies ----------------------------------------------------------------------------------------


def test_format_model_status() -> None:
    response = get_model_status_pb2.GetModelStatusResponse()
    available = response.model_version_status.add(
        version=124, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE
    )
    failed = response.model_version_status.add(version=123, state=get_model_status_pb2.ModelVersionStatus.END)
    failed.status.error_code = 13
    failed.status.error_message = "boom"
    assert not available.HasField("status")
    assert format_model_status(response).decode() == (
        '{\n "model_version_status": [\n  {\n   "version": "124",\n   "state": "AVAILABLE",\n   "status": {\n'
        '    "error_code": "OK",\n    "error_message": ""\n   }\n  },\n  {\n   "version": "123",\n   "state": "END",\n'
        '   "status": {\n    "error_code": "INTERNAL",\n    "error_message": "boom"\n   }\n  }\n ]\n}\n'
    )
    assert not available.HasField("status")  # the caller's message is not changed


def metadata_response(name: str, version: int) -> get_model_metadata_pb2.GetModelMetadataResponse:
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(
        (testdata("saved_model_half_plus_two_cpu") / "00000123" / "saved_model.pb").read_bytes()
    )
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in saved_model.meta_graphs[0].signature_def.items():
        signature_defs.signature_def[key].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = name
    response.model_spec.version.value = version
    response.metadata["signature_def"].Pack(signature_defs)
    return response


def test_format_model_metadata() -> None:
    body = format_model_metadata(metadata_response("default", 123))
    assert body.startswith(b'{\n"model_spec":{\n "name": "default",')
    assert body.endswith(b"}\n}\n")
    expected = json.loads(testdata("half_plus_two_model_metadata.json").read_text())
    assert json.loads(body) == expected


def test_format_model_metadata_errors() -> None:
    response = metadata_response("default", 123)
    del response.metadata["signature_def"]
    error = error_of(lambda: format_model_metadata(response))
    assert (error.code, error.message) == (
        Code.INTERNAL,
        "Failed to find 'signature_def' key in the GetModelMetadataResponse metadata map.",
    )
    response.metadata["signature_def"].Pack(get_model_status_pb2.GetModelStatusResponse())
    error = error_of(lambda: format_model_metadata(response))
    assert (error.code, error.message) == (
        Code.INTERNAL,
        "Failed to unpack 'Any' object to 'SignatureDefMap'.",
    )
