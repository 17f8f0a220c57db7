"""The client's operations, free of I/O: each is a generator that yields the calls it needs (`GrpcCall` or
`RestCall`) and receives their answers, then returns the method's result. `Client` drives them with
blocking transports and `AsyncClient` with asyncio ones, so both clients run the same code.

Only TF Serving's public API is used (gRPC `tensorflow.serving.PredictionService` / `ModelService` and the
`/v1/models` REST routes), plus `grpc.health.v1.Health` and `GET /readyz` for `health()` without a model.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import numpy as np

from aspired_client import tensors
from aspired_client._pb.tensorflow.core.framework import types_pb2
from aspired_client._pb.tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    predict_pb2,
    regression_pb2,
)
from aspired_client.errors import Code, ServingError
from aspired_client.examples import Features, example_json, make_example
from aspired_client.types import ModelMetadata, Signature, TensorSpec, VersionStatus

Protocol = Literal["grpc", "rest"]
PREDICTION_SERVICE = "/tensorflow.serving.PredictionService/"
MODEL_SERVICE = "/tensorflow.serving.ModelService/"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
SIGNATURE_DEF_MAP_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class GrpcCall:
    path: str
    request: Any
    response_type: Any  # a generated message class


@dataclass(frozen=True)
class RestCall:
    """`GET`/`POST` of `path` with a JSON `body`; the answer is the decoded JSON document. With
    `statuses`, those HTTP statuses are answered as `(status, document)` instead of raising."""

    method: str
    path: str
    body: Any = None
    statuses: tuple[int, ...] = ()


Call = GrpcCall | RestCall
Operation = Generator[Call, Any, Any]
# REST predict needs the signature (output names and dtypes); cached per (model, version, label).
SignatureCache = dict[tuple[str, int | None, str | None], ModelMetadata]


def _check_choice(version: int | None, label: str | None) -> None:
    if version is not None and label is not None:
        raise ValueError("give a version or a label, not both")


def model_spec(spec: Any, model: str, version: int | None, label: str | None, signature: str | None) -> None:
    _check_choice(version, label)
    spec.name = model
    if version is not None:
        spec.version.value = version
    elif label is not None:
        spec.version_label = label
    if signature:
        spec.signature_name = signature


def rest_path(model: str, version: int | None, label: str | None, suffix: str = "") -> str:
    _check_choice(version, label)
    path = f"/v1/models/{quote(model, safe='')}"
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label is not None:
        path += f"/labels/{quote(label, safe='')}"
    return path + suffix


# --- predict -------------------------------------------------------------------------------------------


def predict_request(
    model: str,
    inputs: Mapping[str, Any],
    version: int | None = None,
    label: str | None = None,
    signature: str | None = None,
    outputs: Sequence[str] | None = None,
) -> Any:
    """The PredictRequest the official client builds for the same arguments (`tf.make_tensor_proto` of
    each input)."""
    request = predict_pb2.PredictRequest()
    model_spec(request.model_spec, model, version, label, signature)
    for alias, value in inputs.items():
        tensors.fill_tensor_proto(request.inputs[alias], value)
    if outputs:
        request.output_filter.extend(outputs)
    return request


def predict(
    protocol: Protocol,
    cache: SignatureCache,
    model: str,
    inputs: Mapping[str, Any],
    version: int | None,
    label: str | None,
    signature: str | None,
    outputs: Sequence[str] | None,
) -> Operation:
    if protocol == "grpc":
        request = predict_request(model, inputs, version, label, signature, outputs)
        response = yield GrpcCall(PREDICTION_SERVICE + "Predict", request, predict_pb2.PredictResponse)
        return {alias: tensors.make_ndarray(proto) for alias, proto in response.outputs.items()}
    metadata = cache.get((model, version, label))
    if metadata is None:
        metadata = yield from get_metadata(protocol, model, version, label)
        cache[(model, version, label)] = metadata
    key = signature or DEFAULT_SIGNATURE
    body: dict[str, Any] = {"inputs": {alias: _json_tensor(value) for alias, value in inputs.items()}}
    if signature:
        body["signature_name"] = signature
    answer = yield RestCall("POST", rest_path(model, version, label, ":predict"), body)
    found = metadata.signatures.get(key)
    if found is None:  # the server answered, so the cached metadata is stale
        cache.pop((model, version, label), None)
        raise ServingError(Code.INTERNAL, f"signature {key!r} is missing from the model's metadata")
    return _rest_outputs(answer["outputs"], found, outputs)


def _json_tensor(value: Any) -> Any:
    """A REST (columnar) value: nested lists; bytes as `{"b64": ...}`."""
    if isinstance(value, tensors.TensorProto):
        value = tensors.make_ndarray(value)
    array = np.asarray(value)
    if array.dtype.kind in "OS":
        return _map_nested(array.tolist(), _json_string)
    if array.dtype.kind == "c" or array.dtype.name in ("float16", "bfloat16"):
        raise ServingError(
            Code.UNIMPLEMENTED, f"TF Serving's REST API has no JSON form for {array.dtype}: use gRPC"
        )
    return array.tolist()


def _json_string(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, str):
        return value
    raise tensors.TensorError(f"a string tensor holds bytes or str, not {type(value).__name__}")


def _map_nested(value: Any, function: Any) -> Any:
    if isinstance(value, list):
        return [_map_nested(item, function) for item in value]
    return function(value)


def _rest_outputs(answer: Any, signature: Signature, wanted: Sequence[str] | None) -> dict[str, Any]:
    """Arrays from a columnar answer: a single output comes without its alias (TF Serving's format)."""
    names = list(signature.outputs)
    by_alias = answer if len(names) != 1 else {names[0]: answer}
    if not isinstance(by_alias, dict):
        raise ServingError(Code.INTERNAL, f"unexpected predict answer for outputs {names}")
    if wanted:
        missing = [alias for alias in wanted if alias not in by_alias]
        if missing:
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f"output tensor alias not found in signature: {missing[0]} Outputs expected to be in the set "
                f"{{{','.join(sorted(names))}}}.",
            )
        by_alias = {alias: by_alias[alias] for alias in wanted}
    result = {}
    for alias, value in by_alias.items():
        spec = signature.outputs.get(alias)
        data_type = tensors.data_type(spec.dtype) if spec is not None else None
        result[alias] = _from_json(value, data_type, alias)
    return result


def _from_json(value: Any, data_type: int | None, alias: str) -> Any:
    if data_type == types_pb2.DT_STRING:
        array = np.array(_map_nested(value, lambda item: _string_from_json(item, alias)), dtype=object)
        return array
    if data_type is None:
        return np.asarray(value)
    return np.asarray(value, dtype=tensors.numpy_dtype(data_type))


def _string_from_json(item: Any, alias: str) -> bytes:
    if isinstance(item, dict) and set(item) == {"b64"}:
        return base64.b64decode(item["b64"])
    if isinstance(item, str):
        return item.encode()
    raise ServingError(Code.INTERNAL, f"output {alias!r}: expected a string, got {item!r}")


# --- classify / regress ---------------------------------------------------------------------------------


def _input(message: Any, examples: Iterable[Features], context: Features | None) -> None:
    if context is None:
        message.example_list.examples.extend(make_example(e) for e in examples)
    else:
        message.example_list_with_context.examples.extend(make_example(e) for e in examples)
        message.example_list_with_context.context.CopyFrom(make_example(context))


def _examples_body(examples: Iterable[Features], context: Features | None, signature: str | None) -> Any:
    body: dict[str, Any] = {"examples": [example_json(e) for e in examples]}
    if context is not None:
        body["context"] = example_json(context)
    if signature:
        body["signature_name"] = signature
    return body


def classify(
    protocol: Protocol,
    model: str,
    examples: Sequence[Features],
    context: Features | None,
    version: int | None,
    label: str | None,
    signature: str | None,
) -> Operation:
    """One list of (label, score) pairs per example."""
    if protocol == "grpc":
        request = classification_pb2.ClassificationRequest()
        model_spec(request.model_spec, model, version, label, signature)
        _input(request.input, examples, context)
        response = yield GrpcCall(
            PREDICTION_SERVICE + "Classify", request, classification_pb2.ClassificationResponse
        )
        return [
            [(c.label, float(np.float32(c.score))) for c in item.classes]
            for item in response.result.classifications
        ]
    answer = yield RestCall(
        "POST", rest_path(model, version, label, ":classify"), _examples_body(examples, context, signature)
    )
    return [[(str(pair[0]), float(np.float32(pair[1]))) for pair in item] for item in answer["results"]]


def regress(
    protocol: Protocol,
    model: str,
    examples: Sequence[Features],
    context: Features | None,
    version: int | None,
    label: str | None,
    signature: str | None,
) -> Operation:
    """One float per example."""
    if protocol == "grpc":
        request = regression_pb2.RegressionRequest()
        model_spec(request.model_spec, model, version, label, signature)
        _input(request.input, examples, context)
        response = yield GrpcCall(PREDICTION_SERVICE + "Regress", request, regression_pb2.RegressionResponse)
        return [float(np.float32(r.value)) for r in response.result.regressions]
    answer = yield RestCall(
        "POST", rest_path(model, version, label, ":regress"), _examples_body(examples, context, signature)
    )
    return [float(np.float32(value)) for value in answer["results"]]


# --- metadata / status ----------------------------------------------------------------------------------


def get_metadata(protocol: Protocol, model: str, version: int | None, label: str | None) -> Operation:
    from aspired_client._pb.tensorflow_serving.apis import get_model_metadata_pb2

    if protocol == "grpc":
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        model_spec(request.model_spec, model, version, label, None)
        response = yield GrpcCall(
            PREDICTION_SERVICE + "GetModelMetadata", request, get_model_metadata_pb2.GetModelMetadataResponse
        )
        packed = response.metadata.get("signature_def")
        if packed is None or packed.type_url != SIGNATURE_DEF_MAP_URL:
            found = "nothing" if packed is None else packed.type_url
            raise ServingError(Code.INTERNAL, f"metadata holds {found}, not {SIGNATURE_DEF_MAP_URL}")
        signature_map = get_model_metadata_pb2.SignatureDefMap.FromString(packed.value)
        spec = response.model_spec
        return _metadata(spec.name, spec.version.value, signature_map)
    from google.protobuf import json_format

    answer = yield RestCall("GET", rest_path(model, version, label, "/metadata"))
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    json_format.ParseDict(answer["metadata"]["signature_def"], signature_map, ignore_unknown_fields=True)
    spec = answer["model_spec"]
    return _metadata(spec["name"], int(spec.get("version") or 0), signature_map)


def _metadata(name: str, version: int, signature_map: Any) -> ModelMetadata:
    from aspired_client._pb.tensorflow.core.framework import types_pb2

    def spec(info: Any) -> TensorSpec:
        shape = info.tensor_shape
        dims = None if shape.unknown_rank else tuple(dim.size for dim in shape.dim)
        return TensorSpec(info.name, types_pb2.DataType.Name(info.dtype), dims)

    signatures = {
        key: Signature(
            definition.method_name,
            {alias: spec(info) for alias, info in sorted(definition.inputs.items())},
            {alias: spec(info) for alias, info in sorted(definition.outputs.items())},
        )
        for key, definition in sorted(signature_map.signature_def.items())
    }
    return ModelMetadata(name, version, signatures, signature_map)


def get_status(protocol: Protocol, model: str, version: int | None) -> Operation:
    if protocol == "grpc":
        from aspired_client._pb.tensorflow.core.protobuf import error_codes_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        model_spec(request.model_spec, model, version, None, None)
        response = yield GrpcCall(
            MODEL_SERVICE + "GetModelStatus", request, get_model_status_pb2.GetModelStatusResponse
        )
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [
            VersionStatus(
                s.version,
                state_name(s.state),
                error_codes_pb2.Code.Name(s.status.error_code) if s.status.error_code else "OK",
                s.status.error_message,
            )
            for s in response.model_version_status
        ]
    answer = yield RestCall("GET", rest_path(model, version, None))
    return [
        VersionStatus(
            int(s["version"]),
            s["state"],
            s.get("status", {}).get("error_code", "OK"),
            s.get("status", {}).get("error_message", ""),
        )
        for s in answer["model_version_status"]
    ]


# --- reload / health -----------------------------------------------------------------------------------


def model_server_config(config: Any) -> Any:
    """A ModelServerConfig (the client's copy) from a message, a text-format string or a file path."""
    from google.protobuf import text_format

    from aspired_client._pb.tensorflow_serving.config import model_server_config_pb2

    message_type = model_server_config_pb2.ModelServerConfig
    if isinstance(config, message_type):
        return config
    text = config.read_text() if isinstance(config, Path) else str(config)
    return text_format.Parse(text, message_type())


def reload_config(protocol: Protocol, config: Any) -> Operation:
    if protocol != "grpc":
        raise ServingError(
            Code.UNIMPLEMENTED, "TF Serving has no REST route for ReloadConfig; use its gRPC port"
        )
    from aspired_client._pb.tensorflow_serving.apis import model_management_pb2

    request = model_management_pb2.ReloadConfigRequest(config=model_server_config(config))
    response = yield GrpcCall(
        MODEL_SERVICE + "HandleReloadConfigRequest", request, model_management_pb2.ReloadConfigResponse
    )
    if response.status.error_code:
        raise ServingError(Code(response.status.error_code), response.status.error_message)
    return None


def health(protocol: Protocol, model: str | None) -> Operation:
    """With a model: it has an AVAILABLE version (works against any TF Serving). Without: the server's
    grpc.health.v1 answer for "" over gRPC, its `/readyz` probe over REST (aspired's; TF Serving has none)."""
    if model is not None:
        statuses = yield from get_status(protocol, model, None)
        return any(s.state == "AVAILABLE" for s in statuses)
    if protocol == "grpc":
        from aspired_client._pb.grpc.health.v1 import health_pb2

        response = yield GrpcCall(
            HEALTH_CHECK, health_pb2.HealthCheckRequest(), health_pb2.HealthCheckResponse
        )
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
    status, _document = yield RestCall("GET", "/readyz", statuses=(200, 503))
    return bool(status == 200)


def dumps(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()
