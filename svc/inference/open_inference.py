"""The Open Inference Protocol (KServe V2) on the same models and the same request path as TF Serving's API.

`infer` resolves the model like a Predict `ModelSpec` (the V2 `version` is a version number, or a version
label when it is not all digits), checks the inputs against the signature (names, datatypes), and runs
`predict.run_predict`: the same batcher, deadlines, request record (log line, metrics) as TF Serving's
Predict. A model's V2 inputs and outputs are the keys of its `serving_default` signature; the request
parameter `signature_name` selects another. The repository extension (index, load, unload) acts on the models
of the config through the ConfigWatcher (`svc/lifecycle/config_watcher.py` has the rules).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Protocol

import anyio
from tensorflow.core.protobuf import meta_graph_pb2

import svc
from svc.errors import Code, ServingError, invalid_argument
from svc.inference.core import DEFAULT_SIGNATURE, Core, Target, lease
from svc.inference.predict import predict_signature, run_predict
from svc.lifecycle.state_monitor import Table
from svc.lifecycle.states import State
from svc.wire import tensor_proto, v2_tensor
from svc.wire.v2_request import InferOutput, InferRequest, InferResponse, Parameter

SERVER_NAME = "aspired"
EXTENSIONS = ("binary_tensor_data", "model_repository")
PLATFORM = "tensorflow_savedmodel"
_INT64_MAX = 2**63 - 1
# Request parameters this server acts on; others are accepted and have no effect (the protocol's parameters
# are an open set: clients add their own, e.g. KServe's `content_type`).
_SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")


class ModelRepository(Protocol):
    """The ConfigWatcher's side of the repository extension (or, in a frontend worker, the model owner's)."""

    async def load_model(self, name: str) -> None: ...
    async def unload_model(self, name: str) -> None: ...
    async def repository_models(self) -> tuple[tuple[str, ...], frozenset[str]]:
        """The configured model names and the explicitly unloaded ones."""
        ...


def target_of(name: str, version: str) -> Target:
    """A V2 model name and version: "" is the latest version, digits a version number, else a label."""
    if not name:
        raise invalid_argument("model name is missing")
    if not version:
        return Target(name)
    if version.isdigit() and version.isascii():
        number = int(version)
        if number > _INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {version} to numeric.")
        return Target(name, version=number)
    return Target(name, label=version)


# -- health and metadata ---------------------------------------------------------------------------------


def model_ready(core: Core, name: str, version: str) -> bool:
    try:
        core.serving_map.current.resolve(*_lookup(target_of(name, version)))
    except ServingError:
        return False
    return True


def _lookup(target: Target) -> tuple[str, int | None, str | None]:
    return target.name, target.version, target.label


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str = SERVER_NAME
    version: str = svc.__version__
    extensions: tuple[str, ...] = EXTENSIONS


def _tensors(infos: Mapping[str, meta_graph_pb2.TensorInfo]) -> tuple[TensorMetadata, ...]:
    out = []
    for alias in sorted(infos):
        info = infos[alias]
        shape = info.tensor_shape
        dims = (-1,) if shape.unknown_rank else tuple(d.size if d.size >= 0 else -1 for d in shape.dim)
        out.append(TensorMetadata(alias, v2_tensor.datatype_of(info.dtype, alias), dims))
    return tuple(out)


def model_metadata(core: Core, name: str, version: str) -> ModelMetadata:
    """The model's versions being served and its default signature's inputs and outputs (unknown dims -1;
    none when the model has no `serving_default` signature)."""
    target = target_of(name, version)
    servable = core.serving_map.current.resolve(*_lookup(target))
    entry = core.serving_map.current.models[servable.name]
    versions = tuple(str(v) for v in sorted(entry.versions))
    signature = servable.signatures.get(DEFAULT_SIGNATURE)
    if signature is None:  # e.g. saved_model_counter: infer names a signature with `signature_name`
        return ModelMetadata(servable.name, versions, PLATFORM, (), ())
    return ModelMetadata(servable.name, versions, PLATFORM, _tensors(signature.inputs), _tensors(signature.outputs))


# -- inference -------------------------------------------------------------------------------------------


def _signature_name(parameters: Mapping[str, Parameter]) -> str:
    name = parameters.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument("parameter signature_name must be a string")
    return name


def _deadline(parameters: Mapping[str, Parameter], deadline: float | None) -> float | None:
    """Triton's `timeout` request parameter (microseconds) shortens the call's own deadline."""
    timeout = parameters.get("timeout")
    if timeout is None:
        return deadline
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
        raise invalid_argument("parameter timeout must be a non-negative integer (microseconds)")
    own = anyio.current_time() + timeout / 1e6
    return own if deadline is None else min(own, deadline)


def check_inputs(
    request: InferRequest, signature: meta_graph_pb2.SignatureDef, model: str
) -> dict[str, v2_tensor.Array]:
    """Names and datatypes against the signature; the arrays keyed by signature alias."""
    inputs: dict[str, v2_tensor.Array] = {}
    for tensor in request.inputs:
        info = signature.inputs.get(tensor.name)
        if info is None:
            raise invalid_argument(
                f"unexpected inference input '{tensor.name}' for model '{model}', expected one of "
                f"{sorted(signature.inputs)}"
            )
        if tensor.name in inputs:
            raise invalid_argument(f"input '{tensor.name}' is given more than once")
        expected = v2_tensor.datatype_of(info.dtype, tensor.name)
        if tensor.datatype != expected:
            raise invalid_argument(
                f"inference input '{tensor.name}' data-type is '{tensor.datatype}', but model '{model}' "
                f"expects '{expected}'"
            )
        inputs[tensor.name] = tensor.array
    return inputs


def _output_names(request: InferRequest, signature: meta_graph_pb2.SignatureDef) -> list[str]:
    names = [o.name for o in request.outputs]
    for name in names or sorted(signature.outputs):
        if name in signature.outputs:
            v2_tensor.datatype_of(signature.outputs[name].dtype, name)  # refuse before running
    return names


async def infer(core: Core, request: InferRequest, *, deadline: float | None = None) -> InferResponse:
    """ModelInfer / POST .../infer: one Predict through the shared path."""
    for key in _SEQUENCE_PARAMETERS:
        if request.parameters.get(key):
            raise invalid_argument(f"parameter {key}: sequence batching is not supported")
    signature_name = _signature_name(request.parameters)
    deadline = _deadline(request.parameters, deadline)
    with lease(core, target_of(request.model_name, request.model_version)) as servable:
        signature = predict_signature(servable, signature_name)
        inputs = check_inputs(request, signature, request.model_name)
        output_filter = _output_names(request, signature)
        result = await run_predict(core, servable, signature_name, inputs, output_filter, deadline=deadline)
    outputs = []
    for alias, array in result.outputs.items():
        datatype = v2_tensor.datatype_of(tensor_proto.data_type_of(array), alias)
        outputs.append(InferOutput(alias, datatype, array))
    return InferResponse(request.model_name, str(result.version), request.id, tuple(outputs))


# -- repository extension --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str


_STATE_NAMES = {
    State.START: "LOADING",
    State.LOADING: "LOADING",
    State.AVAILABLE: "READY",
    State.UNLOADING: "UNLOADING",
    State.END: "UNAVAILABLE",
}


def repository_index(
    names: Sequence[str], unloaded: AbstractSet[str], table: Table, ready_only: bool
) -> list[IndexEntry]:
    """One entry per version the server has seen of each configured model (one without a version when it
    has none), with Triton's state names."""
    entries = []
    for name in names:
        versions = table.get(name, {})
        if not versions and not ready_only:
            reason = "unloaded" if name in unloaded else "no version loaded yet"
            entries.append(IndexEntry(name, "", "UNAVAILABLE", reason))
        for version in sorted(versions):
            status = versions[version]
            state = _STATE_NAMES.get(status.state, "UNAVAILABLE")
            if ready_only and state != "READY":
                continue
            reason = status.message if status.code is not Code.OK else ""
            if state == "UNAVAILABLE" and not reason:
                reason = "unloaded"
            entries.append(IndexEntry(name, str(version), state, reason))
    return entries


async def index(core: Core, repository: ModelRepository | None, ready_only: bool) -> list[IndexEntry]:
    names, unloaded = await _repository(repository).repository_models()
    return repository_index(names, unloaded, core.monitor.snapshot(), ready_only)


def _repository(repository: ModelRepository | None) -> ModelRepository:
    if repository is None:
        raise ServingError(Code.UNIMPLEMENTED, "the model repository extension is not available")
    return repository


def _check_parameters(parameters: Mapping[str, object], allowed: Sequence[str], action: str) -> None:
    for key in parameters:
        if key not in allowed:
            raise invalid_argument(
                f"{action}: parameter '{key}' is not supported (models load from the paths of the model config)"
            )


async def load(repository: ModelRepository | None, name: str, parameters: Mapping[str, object]) -> None:
    _check_parameters(parameters, (), "load")
    await _repository(repository).load_model(name)


async def unload(repository: ModelRepository | None, name: str, parameters: Mapping[str, object]) -> None:
    # A SavedModel has no dependent models: `unload_dependents` (sent by Triton's clients) changes nothing.
    _check_parameters(parameters, ("unload_dependents",), "unload")
    await _repository(repository).unload_model(name)

