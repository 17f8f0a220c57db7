"""The request implementations shared by the gRPC and REST frontends.

Mirrors TF Serving's `servables/tensorflow/predict_util.cc`, `get_model_metadata_impl.cc` and
`model_servers/get_model_status_impl.cc`: the same validation order and the same error texts, whichever
protocol the request came in on. Frontends only translate wire formats and call these.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

import anyio
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from svc.batching.scheduler import Batcher
from svc.errors import Code, ServingError, failed_precondition, invalid_argument, not_found
from svc.frontends.request_log import current_request
from svc.lifecycle.serving_map import ServingMapHolder
from svc.lifecycle.state_monitor import StateMonitor
from svc.metrics import Metrics
from svc.servables.saved_model import Array, Servable
from svc.wire import tensor_proto as tensors

DEFAULT_SIGNATURE = "serving_default"
SIGNATURE_DEF_FIELD = "signature_def"
MAX_TENSOR_ELEMENTS = 2**27  # ~134M elements: a TensorProto claiming more is refused before allocation


class Reloader(Protocol):
    async def reload(self, config: model_server_config_pb2.ModelServerConfig, *, request: bool = False) -> None: ...


@dataclass(slots=True)
class Core:
    """What the request implementations need; one per server."""

    serving_map: ServingMapHolder
    monitor: StateMonitor
    batcher: Batcher
    tensor_content: bool = False
    max_tensor_elements: int = MAX_TENSOR_ELEMENTS
    signature_method_name_check: bool = False  # --enable_signature_method_name_check
    reloader: Reloader | None = None
    metrics: Metrics | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """A ModelSpec resolved to what the serving map looks up."""

    name: str
    version: int | None = None
    label: str | None = None


def target_of(spec: model_pb2.ModelSpec) -> Target:
    if not spec.name:
        raise invalid_argument("ModelSpec has no name specified.")
    match spec.WhichOneof("version_choice"):
        case "version":
            return Target(spec.name, version=spec.version.value)
        case "version_label":
            return Target(spec.name, label=spec.version_label)  # "" is a label too, as in TF
        case _:
            return Target(spec.name)


def acquire(core: Core, target: Target) -> Servable:
    servable = core.serving_map.current.acquire(target.name, target.version, target.label)
    record = current_request.get()
    if record is not None:
        record.version = servable.version
    return servable


def signature_name_or_default(name: str) -> str:
    return name or DEFAULT_SIGNATURE


def predict_signature(servable: Servable, name: str) -> meta_graph_pb2.SignatureDef:
    signature = servable.signatures.get(signature_name_or_default(name))
    if signature is None:
        raise failed_precondition(f'Serving signature key "{signature_name_or_default(name)}" not found.')
    return signature


def base_dtype(dtype: int) -> int:
    """A reference dtype (float_ref = 101) is its base type when it comes out of a session."""
    return dtype - 100 if dtype > 100 else dtype


InputValue: TypeAlias = tensor_pb2.TensorProto | Array
OFFLOAD_BYTES = 1 << 20  # tensors above this are converted in a worker thread, off the event loop


def input_bytes(inputs: Mapping[str, InputValue]) -> int:
    return sum(v.nbytes if isinstance(v, np.ndarray) else v.ByteSize() for v in inputs.values())


def _check_input_size(signature: meta_graph_pb2.SignatureDef, inputs: Mapping[str, InputValue]) -> None:
    n_req, n_sig = len(inputs), len(signature.inputs)
    if n_req > n_sig or (n_req < n_sig and not signature.defaults):
        req, sig = set(inputs), set(signature.inputs)
        raise invalid_argument(
            f"input size does not match signature: {n_req}!={n_sig} len({{{','.join(sorted(req))}}}) != "
            f"len({{{','.join(sorted(sig))}}}). Sent extra: {{{','.join(sorted(req - sig))}}}. "
            f"Missing but required: {{{','.join(sorted(sig - req))}}}."
        )


def _to_array(value: InputValue, alias: str, max_elements: int) -> Array:
    if isinstance(value, np.ndarray):
        return value
    try:
        return tensors.to_ndarray(value, max_elements=max_elements)
    except tensors.TensorConversionError as exc:
        raise invalid_argument(f"tensor parsing error: {alias}") from exc


def feeds_for(
    signature: meta_graph_pb2.SignatureDef, inputs: Mapping[str, InputValue], max_elements: int
) -> dict[str, Array]:
    """TF's `saved_model::GetInputValues`: request inputs (or signature defaults) keyed by feed name."""
    feeds: dict[str, Array] = {}
    seen: set[str] = set()
    for alias in sorted(signature.inputs):
        info = signature.inputs[alias]
        if alias in inputs:
            value: InputValue = inputs[alias]
            seen.add(alias)
        elif alias in signature.defaults:
            value = signature.defaults[alias]
        else:
            raise invalid_argument(
                f"Signature input alias: {alias}(feed name: {info.name}) not found in request and no default "
                f"value provided. Inputs expected to be in the request {{{','.join(sorted(inputs))}}}, or "
                f"default input alias set: {','.join(sorted(signature.defaults))}"
            )
        feeds[info.name] = _to_array(value, alias, max_elements)
    if inputs and len(seen) != len(inputs):
        raise invalid_argument(
            f"Inputs contains invalid name. Used request inputs: {','.join(sorted(seen))}, request input: "
            f"{','.join(sorted(inputs))}"
        )
    return feeds


def outputs_for(signature: meta_graph_pb2.SignatureDef, output_filter: Sequence[str]) -> list[str]:
    """The output aliases to fetch, in filter order (or every output when the filter is empty)."""
    if not output_filter:
        return list(signature.outputs)
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                f"{{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return list(output_filter)


@dataclass(frozen=True, slots=True)
class Prediction:
    servable: Servable
    signature_name: str
    outputs: dict[str, Array]
    dtypes: dict[str, int]


async def run_predict(
    core: Core,
    servable: Servable,
    signature_name: str,
    inputs: Mapping[str, InputValue],
    output_filter: Sequence[str] = (),
    *,
    deadline: float | None = None,
) -> Prediction:
    """PreProcessPrediction + Session.Run + aliases; the caller holds a reference to `servable`."""
    signature = predict_signature(servable, signature_name)
    _check_input_size(signature, inputs)
    record = current_request.get()
    if record is not None:
        record.signature = signature_name_or_default(signature_name)
    if input_bytes(inputs) > OFFLOAD_BYTES:  # a big conversion would stall every other request on the loop
        feeds = await anyio.to_thread.run_sync(feeds_for, signature, inputs, core.max_tensor_elements)
    else:
        feeds = feeds_for(signature, inputs, core.max_tensor_elements)
    aliases = outputs_for(signature, output_filter)
    started = time.perf_counter()
    fetched = await core.batcher.submit(
        servable, feeds, [signature.outputs[a].name for a in aliases], deadline=deadline
    )
    if core.metrics is not None:
        core.metrics.runtime(servable.name, "Predict", time.perf_counter() - started)
    if len(fetched) != len(aliases):
        raise ServingError(Code.UNKNOWN, "Predict internal error")
    dtypes = {a: base_dtype(signature.outputs[a].dtype) for a in aliases}
    return Prediction(servable, signature_name_or_default(signature_name), dict(zip(aliases, fetched, strict=True)),
                      dtypes)


def output_tensor(array: Array, dtype: int, as_content: bool) -> tensor_pb2.TensorProto:
    actual = tensors.data_type_of(array)
    if dtype == types_pb2.DT_INVALID or actual != dtype:
        dtype = actual
    return tensors.from_ndarray(array, dtype, as_content=as_content)


async def predict(
    core: Core, request: predict_pb2.PredictRequest, *, deadline: float | None = None
) -> predict_pb2.PredictResponse:
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    servable = acquire(core, target_of(request.model_spec))
    try:
        result = await run_predict(
            core, servable, request.model_spec.signature_name, request.inputs, request.output_filter,
            deadline=deadline,
        )
    finally:
        servable.release()
    if sum(a.nbytes for a in result.outputs.values()) > OFFLOAD_BYTES:
        return await anyio.to_thread.run_sync(predict_response, core, request, result)
    return predict_response(core, request, result)


def predict_response(
    core: Core, request: predict_pb2.PredictRequest, result: Prediction
) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    spec = response.model_spec
    spec.name = request.model_spec.name
    spec.version.value = result.servable.version
    spec.signature_name = result.signature_name
    for alias, array in result.outputs.items():
        response.outputs[alias].CopyFrom(output_tensor(array, result.dtypes[alias], core.tensor_content))
    return response


def get_model_metadata(
    core: Core, request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    if not request.metadata_field:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise invalid_argument(f"Metadata field {field} is not supported")
    target = target_of(request.model_spec)
    servable = acquire(core, target)
    try:
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in servable.signatures.items():
            signature_map.signature_def[key].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response
    finally:
        servable.release()


def get_model_status(
    core: Core, request: get_model_status_pb2.GetModelStatusRequest
) -> get_model_status_pb2.GetModelStatusResponse:
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    spec = request.model_spec
    versions = core.monitor.versions(spec.name)
    response = get_model_status_pb2.GetModelStatusResponse()
    if spec.WhichOneof("version_choice") == "version":
        version = spec.version.value
        if version not in versions:
            raise not_found(f"Could not find version {version} of model {spec.name}")
        chosen = {version: versions[version]}
    else:
        if not versions:
            raise not_found(f"Could not find any versions of model {spec.name}")
        chosen = dict(versions)
    for version, status in chosen.items():
        entry = response.model_version_status.add()
        entry.version = version
        entry.state = int(status.state)
        entry.status.error_code = int(status.code)
        entry.status.error_message = status.message
    return response


async def reload_config(
    core: Core, request: model_management_pb2.ReloadConfigRequest
) -> model_management_pb2.ReloadConfigResponse:
    """ModelService.HandleReloadConfigRequest: answers once the added models are AVAILABLE or failed."""
    if core.reloader is None:
        raise ServingError(Code.UNIMPLEMENTED, "Config reload is not available")
    names = list(request.metric_names)
    before = {n: core.metrics.int64_value(n) for n in names} if core.metrics is not None else {}
    await core.reloader.reload(request.config, request=True)
    response = model_management_pb2.ReloadConfigResponse()
    response.status.error_code = Code.OK
    # TF Serving: for each requested metric name, the increase of that int64 TF metric during the reload.
    for name in names:
        start = before.get(name)
        end = core.metrics.int64_value(name) if core.metrics is not None else None
        if start is None or end is None:
            continue
        metric = response.metric.add()
        metric.name = name
        metric.int64_value_increase = end - start
    return response
