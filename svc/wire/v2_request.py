"""Open Inference Protocol (KServe V2) inference requests and responses: REST JSON (with the binary tensor data
extension) and gRPC `ModelInferRequest` / `ModelInferResponse` <-> one protocol-neutral form.

Pure functions, no I/O. REST: the body is JSON, or, with an `Inference-Header-Content-Length: N` header, N
bytes of JSON followed by the binary chunks of the inputs whose `binary_data_size` parameter is set, in input
order; outputs are returned as binary chunks when their `binary_data` parameter (or the request's
`binary_data_output`) is true. gRPC: inputs come as typed `contents` or, for all of them, `raw_input_contents`;
the response mirrors the request's choice (raw, as Triton always answers, when the request has no inputs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import orjson

from svc._proto.inference import grpc_service_pb2 as pb
from svc.errors import invalid_argument
from svc.wire import v2_tensor
from svc.wire.v2_tensor import Array

Parameter: TypeAlias = bool | int | float | str
Parameters: TypeAlias = dict[str, Parameter]


@dataclass(frozen=True, slots=True)
class InferInput:
    name: str
    datatype: str
    array: Array


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # REST: this output's `binary_data` parameter, None when not given


@dataclass(frozen=True, slots=True)
class InferRequest:
    model_name: str
    model_version: str
    id: str
    parameters: Parameters
    inputs: tuple[InferInput, ...]
    outputs: tuple[RequestedOutput, ...] = ()
    raw: bool = True  # gRPC: the inputs came as raw_input_contents (the response answers the same way)


@dataclass(frozen=True, slots=True)
class InferOutput:
    name: str
    datatype: str
    array: Array


@dataclass(frozen=True, slots=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: tuple[InferOutput, ...]
    parameters: Parameters = field(default_factory=dict)


# -- REST ------------------------------------------------------------------------------------------------


def _json_object(text: bytes | memoryview) -> dict[str, Any]:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:  # NaN, Infinity and other Python-json extensions that orjson refuses
            doc = json.loads(bytes(text))
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid_argument(f"failed to parse the request JSON buffer: {exc}") from None
    if not isinstance(doc, dict):
        raise invalid_argument("the request JSON must be an object")
    return doc


def _parameters(value: Any, where: str) -> Parameters:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, bool | int | float | str) for v in value.values()):
        raise invalid_argument(f"{where} parameters must be an object of booleans, numbers and strings")
    return value


def _shape(value: Any, tensor: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise invalid_argument(f"tensor '{tensor}': shape must be a list of integers")
    return value


def _string(doc: Mapping[str, Any], key: str, where: str, required: bool = True) -> str:
    value = doc.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise invalid_argument(f"{where}: '{key}' must be a string")
    return value


def parse_json_request(
    body: bytes, header_length: int | None, model_name: str, model_version: str
) -> InferRequest:
    """A REST infer request; `header_length` is the Inference-Header-Content-Length header, if any."""
    if header_length is not None and not 0 <= header_length <= len(body):
        raise invalid_argument(
            f"Inference-Header-Content-Length {header_length} is not within the body of {len(body)} bytes"
        )
    view = memoryview(body)
    split = len(body) if header_length is None else header_length
    doc = _json_object(view[:split])
    binary, pos = view[split:], 0
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list):
        raise invalid_argument("the request has no 'inputs' list")
    inputs = []
    for item in raw_inputs:
        if not isinstance(item, dict):
            raise invalid_argument("each input must be an object")
        name = _string(item, "name", "input")
        datatype = _string(item, "datatype", f"input '{name}'")
        shape = _shape(item.get("shape"), name)
        params = _parameters(item.get("parameters"), f"input '{name}'")
        size = params.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise invalid_argument(f"tensor '{name}': binary_data_size must be a non-negative integer")
            if "data" in item:
                raise invalid_argument(f"tensor '{name}': both binary_data_size and data are given")
            if pos + size > len(binary):
                raise invalid_argument(
                    f"tensor '{name}': binary_data_size {size} runs past the {len(binary)} bytes of binary data"
                )
            array = v2_tensor.from_raw(name, datatype, shape, binary[pos : pos + size])
            pos += size
        else:
            if "data" not in item:
                raise invalid_argument(f"tensor '{name}': no data and no binary_data_size")
            array = v2_tensor.from_json(name, datatype, shape, item["data"])
        inputs.append(InferInput(name, datatype, array))
    if pos != len(binary):
        raise invalid_argument(f"{len(binary) - pos} bytes of binary data are not claimed by any input")
    outputs = []
    for item in doc.get("outputs") or ():
        if not isinstance(item, dict):
            raise invalid_argument("each requested output must be an object")
        name = _string(item, "name", "output")
        params = _parameters(item.get("parameters"), f"output '{name}'")
        if "classification" in params:
            raise invalid_argument(f"output '{name}': the classification extension is not supported")
        wanted = params.get("binary_data")
        outputs.append(RequestedOutput(name, None if wanted is None else bool(wanted)))
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise invalid_argument("'id' must be a string")
    return InferRequest(
        model_name, model_version, request_id, _parameters(doc.get("parameters"), "request"), tuple(inputs),
        tuple(outputs),
    )


def format_json_response(response: InferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    """The REST response body and, when some outputs are binary, the length of its JSON header."""
    default_binary = bool(request.parameters.get("binary_data_output", False))
    wanted = {o.name: o.binary for o in request.outputs}
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    chunks: list[bytes] = []
    outputs = []
    for out in response.outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(out.array.shape)}
        binary = wanted.get(out.name)
        if binary if binary is not None else default_binary:
            raw = v2_tensor.to_raw(out.array, out.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = v2_tensor.json_data(out.array, out.datatype)
        outputs.append(entry)
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


# -- gRPC ------------------------------------------------------------------------------------------------


def grpc_parameters(params: Mapping[str, Any]) -> Parameters:
    out: Parameters = {}
    if not params:
        return out
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(value, choice)
    return out


def parse_grpc_request(request: pb.ModelInferRequest) -> InferRequest:
    raw_contents: Sequence[bytes] = request.raw_input_contents
    tensors = request.inputs
    if raw_contents and len(raw_contents) != len(tensors):
        raise invalid_argument(
            f"{len(raw_contents)} raw_input_contents for {len(tensors)} inputs: give one per input or none"
        )
    inputs = []
    for i, tensor in enumerate(tensors):
        name, datatype, shape = tensor.name, tensor.datatype, tuple(tensor.shape)
        if raw_contents:
            if tensor.HasField("contents"):
                raise invalid_argument(f"tensor '{name}': contents and raw_input_contents are both given")
            array = v2_tensor.from_raw(name, datatype, shape, raw_contents[i])
        else:
            array = v2_tensor.from_contents(name, datatype, shape, tensor.contents)
        inputs.append(InferInput(name, datatype, array))
    outputs: tuple[RequestedOutput, ...] = ()
    if request.outputs:
        for out in request.outputs:
            if "classification" in out.parameters:
                raise invalid_argument(f"output '{out.name}': the classification extension is not supported")
        outputs = tuple(RequestedOutput(o.name) for o in request.outputs)
    return InferRequest(
        request.model_name, request.model_version, request.id, grpc_parameters(request.parameters),
        tuple(inputs), outputs,
        raw=bool(raw_contents) or not tensors,  # no inputs: raw, as Triton always answers
    )


def set_parameter(message: Any, value: Parameter) -> None:
    if isinstance(value, bool):
        message.bool_param = value
    elif isinstance(value, int):
        message.int64_param = value
    elif isinstance(value, float):
        message.double_param = value
    else:
        message.string_param = value


def grpc_response(response: InferResponse, raw: bool) -> pb.ModelInferResponse:
    # Raw contents are all or nothing: an FP16/BF16 output (no typed field) makes every output raw.
    raw = raw or any(o.datatype not in v2_tensor.CONTENTS_FIELD for o in response.outputs)
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    for key, value in response.parameters.items():
        set_parameter(message.parameters[key], value)
    tensors = message.outputs
    for out in response.outputs:
        tensor = tensors.add(name=out.name, datatype=out.datatype, shape=out.array.shape)
        if not raw:
            v2_tensor.fill_contents(tensor.contents, out.array, out.datatype)
    if raw:
        message.raw_output_contents.extend([v2_tensor.to_raw(o.array, o.datatype) for o in response.outputs])
    return message
