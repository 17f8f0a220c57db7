"""REST JSON bodies without tensors: classify/regress requests (tf.Examples) and results, TF Serving's
`FillClassifyRegressRequestFromJson`, `MakeJsonFromClassificationResult` and `MakeJsonFromRegressionResult`
(`util/json_tensor.cc`); and the GET bodies, model status and metadata (`ToJsonString` in
`model_servers/http_rest_api_util.cc`). JSON is read and written by `svc/wire/rapidjson_compat.py` (TF Serving's
rapidjson); the `util/json_tensor.cc` helpers it shares with predict are in `svc/wire/json_tensor.py`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    regression_pb2,
)

from svc.errors import internal, invalid_argument
from svc.types import INT64_MAX, Json
from svc.wire.json_tensor import (
    decode_base64_object,
    is_base64_object,
    signature_name,
    to_float32,
    write_decimal,
)
from svc.wire.rapidjson_compat import (
    as_double,
    encode,
    format_error_status,
    json_type,
    parse_json_object,
    quote,
    utf8,
)

__all__ = [
    "format_classify",
    "format_model_metadata",
    "format_model_status",
    "format_regress",
    "parse_classify_regress",
]

_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}


def parse_classify_regress(body: bytes, method: str) -> tuple[str, input_pb2.Input]:
    """The signature name ("" when absent) and the Input of a classify or regress request: `examples`, a list of
    objects (one tf.Example each), and an optional `context` object (then `example_list_with_context`)."""
    if method not in ("classify", "regress"):
        raise ValueError(f"not a classify/regress method: {method!r}")
    doc = parse_json_object(body)
    name = signature_name(doc)
    request_input = input_pb2.Input()
    has_context = "context" in doc
    if has_context:
        context = request_input.example_list_with_context.context
        context.SetInParent()
        _fill_example(doc["context"], context)
    if "examples" not in doc:
        # TF Serving's text names classify for regress requests too.
        raise format_error_status(
            doc, "When method is classify, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise format_error_status(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise format_error_status(doc, "'examples' value is an empty array")
    target = (request_input.example_list_with_context if has_context else request_input.example_list).examples
    for example in examples:
        _fill_example(example, target.add())
    return name, request_input


def _fill_example(value: Json, example: example_pb2.Example) -> None:
    """TF Serving's `MakeExampleFromJsonObject`: one feature per key, from a value or a flat list of values."""
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
    for name, content in value.items():
        kind, values = _feature_values(name, content if isinstance(content, list) else [content])
        key = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # protobuf keys are UTF-8
        feature: feature_pb2.Feature = example.features.feature[key]  # an empty list gives an empty feature
        if kind is not None:
            getattr(feature, kind).value.extend(values)


def _feature_values(name: str, items: list[Json]) -> tuple[str | None, list[Any]]:
    """TF Serving's `AddValueToFeature` over a list: JSON integers and booleans are int64, numbers written with a
    fraction or exponent are float (so `2` and `2.0` differ), strings and `{"b64": ...}` are bytes."""
    kind: str | None = None
    values: list[Any] = []
    for item in items:
        if item is None or isinstance(item, list) or (isinstance(item, dict) and not is_base64_object(item)):
            raise invalid_argument(
                f"Feature: {name} has element with unexpected JSON type: {json_type(item)}"
            )
        if isinstance(item, str | dict):
            wanted = "bytes_list"
        elif isinstance(item, bool) or (isinstance(item, int) and -INT64_MAX - 1 <= item < 2**64):
            wanted = "int64_list"
        else:  # a float, or an integer beyond uint64 that rapidjson holds as a double
            wanted = "float_list"
        if kind not in (None, wanted):
            raise invalid_argument(
                f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[str(kind)]}"
            )
        kind = wanted
        if isinstance(item, dict):
            values.append(decode_base64_object(item))
        elif isinstance(item, str):
            values.append(utf8(item))
        elif wanted == "int64_list":
            if item > INT64_MAX:
                raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
            values.append(int(item))
        else:
            assert isinstance(item, int | float)
            values.append(to_float32(as_double(item)))
    return kind, values


def format_classify(result: classification_pb2.ClassificationResult) -> bytes:
    """`{"results": [[["<label>", <score>], ...], ...]}`: one list of (label, score) pairs per example."""
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    rows = (
        "[" + ", ".join(f"[{quote(c.label)}, {write_decimal(c.score, False)}]" for c in classes.classes) + "]"
        for classes in result.classifications
    )
    return encode('{\n    "results": [' + ", ".join(rows) + "\n    ]\n}")


def format_regress(result: regression_pb2.RegressionResult) -> bytes:
    """`{"results": [<value>, ...]}`: one value per example."""
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    values = ", ".join(write_decimal(r.value, False) for r in result.regressions)
    return encode('{\n    "results": [' + values + "]\n}")


def _proto_json(message: Any, preserve_names: bool) -> str:
    """protobuf's JSON printer as TF Serving sets it up (whitespace, fields without presence printed)."""
    text = json_format.MessageToJson(
        message,
        indent=1,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=preserve_names,
        ensure_ascii=False,
    )
    return str(text) + "\n"  # the C++ printer ends with a newline


def format_model_status(response: get_model_status_pb2.GetModelStatusResponse) -> bytes:
    """GetModelStatusResponse as protobuf JSON: 1-space indent, enum names, int64 as strings."""
    copy = get_model_status_pb2.GetModelStatusResponse()
    copy.CopyFrom(response)
    for version_status in copy.model_version_status:
        version_status.status.SetInParent()  # TF Serving always sets it, so "OK" and "" get printed
    return encode(_proto_json(copy, preserve_names=False))


def format_model_metadata(response: get_model_metadata_pb2.GetModelMetadataResponse) -> bytes:
    """The document TF Serving assembles by hand around the model spec and the unpacked SignatureDefMap
    (proto field names, hence `signature_def` twice)."""
    if "signature_def" not in response.metadata:
        raise internal("Failed to find 'signature_def' key in the GetModelMetadataResponse metadata map.")
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    if not response.metadata["signature_def"].Unpack(signature_defs):
        raise internal("Failed to unpack 'Any' object to 'SignatureDefMap'.")
    model_spec = _proto_json(response.model_spec, preserve_names=True)
    signature_def = _proto_json(signature_defs, preserve_names=True)
    return encode(
        '{\n"model_spec":' + model_spec + ',\n"metadata": {"signature_def": ' + signature_def + "}\n}\n"
    )
