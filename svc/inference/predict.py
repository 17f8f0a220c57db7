"""Predict: one pure prepare step, one run through the batcher, one pure finish step.

Mirrors TF Serving's `servables/tensorflow/predict_util.cc` (`PreProcessPrediction`, `RunPredict`,
`PostProcessPredictionResult`): the same validation order and the same error texts, whichever protocol the
request came in on. The gRPC frontend calls `predict`; the REST frontend parses its JSON into arrays and calls
`prepare_predict` / `run` / `finish_predict`; warmup calls `prepare_predict` / `finish_predict` around the
servable's own run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import anyio
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import predict_pb2

from svc.errors import Code, ServingError, failed_precondition, invalid_argument
from svc.inference.core import (
    Core,
    Task,
    lease,
    note_signature,
    run,
    signature_name_or_default,
    target_of,
)
from svc.servables.saved_model import Servable
from svc.types import OFFLOAD_TENSOR_BYTES, Array
from svc.wire import tensor_proto as tensors

InputValue: TypeAlias = tensor_pb2.TensorProto | Array


def predict_signature(servable: Servable, name: str) -> meta_graph_pb2.SignatureDef:
    signature = servable.signatures.get(signature_name_or_default(name))
    if signature is None:
        raise failed_precondition(f'Serving signature key "{signature_name_or_default(name)}" not found.')
    return signature


def base_dtype(dtype: int) -> int:
    """A reference dtype (float_ref = 101) is its base type when it comes out of a session."""
    return dtype - 100 if dtype > 100 else dtype


def input_bytes(inputs: Mapping[str, InputValue]) -> int:
    return sum(v.nbytes if isinstance(v, np.ndarray) else v.ByteSize() for v in inputs.values())


def check_input_size(signature: meta_graph_pb2.SignatureDef, inputs: Mapping[str, InputValue]) -> None:
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
class PredictTask:
    """A prepared Predict: the run's feeds and fetches, and the output aliases and dtypes to answer with."""

    task: Task
    signature_name: str
    aliases: list[str]
    dtypes: dict[str, int]


@dataclass(frozen=True, slots=True)
class Prediction:
    version: int
    signature_name: str
    outputs: dict[str, Array]
    dtypes: dict[str, int]


def check_predict_signature(
    servable: Servable, signature_name: str, inputs: Mapping[str, InputValue]
) -> meta_graph_pb2.SignatureDef:
    """The checks of `PreProcessPrediction` that need no tensor conversion (on the event loop)."""
    signature = predict_signature(servable, signature_name)
    check_input_size(signature, inputs)
    return signature


def prepare_predict(
    signature: meta_graph_pb2.SignatureDef,
    signature_name: str,
    inputs: Mapping[str, InputValue],
    output_filter: Sequence[str],
    max_elements: int,
) -> PredictTask:
    """The rest of `PreProcessPrediction`: feeds (converted from TensorProtos) and fetches. Pure."""
    feeds = feeds_for(signature, inputs, max_elements)
    aliases = outputs_for(signature, output_filter)
    return PredictTask(
        Task(feeds, [signature.outputs[a].name for a in aliases]),
        signature_name_or_default(signature_name),
        aliases,
        {a: base_dtype(signature.outputs[a].dtype) for a in aliases},
    )


def finish_predict(prepared: PredictTask, version: int, fetched: Sequence[Array]) -> Prediction:
    """`PostProcessPredictionResult`: the outputs by alias. Pure."""
    if len(fetched) != len(prepared.aliases):
        raise ServingError(Code.UNKNOWN, "Predict internal error")
    return Prediction(
        version, prepared.signature_name, dict(zip(prepared.aliases, fetched, strict=True)), prepared.dtypes
    )


async def run_predict(
    core: Core,
    servable: Servable,
    signature_name: str,
    inputs: Mapping[str, InputValue],
    output_filter: Sequence[str] = (),
    *,
    deadline: float | None = None,
) -> Prediction:
    """`RunPredict` on a leased servable: prepare (in a worker thread when the tensors are big), run, finish."""
    signature = check_predict_signature(servable, signature_name, inputs)
    note_signature(signature_name)
    args = (signature, signature_name, inputs, output_filter, core.max_tensor_elements)
    if input_bytes(inputs) > OFFLOAD_TENSOR_BYTES:  # a big conversion would stall every request on the loop
        prepared = await anyio.to_thread.run_sync(prepare_predict, *args)
    else:
        prepared = prepare_predict(*args)
    fetched = await run(core, servable, prepared.task, deadline=deadline, api="Predict")
    return finish_predict(prepared, servable.version, fetched)


def output_tensor(array: Array, dtype: int, as_content: bool) -> tensor_pb2.TensorProto:
    actual = tensors.data_type_of(array)
    if dtype == types_pb2.DT_INVALID or actual != dtype:
        dtype = actual
    return tensors.from_ndarray(array, dtype, as_content=as_content)


def predict_response(
    request: predict_pb2.PredictRequest, result: Prediction, tensor_content: bool
) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    spec = response.model_spec
    spec.name = request.model_spec.name
    spec.version.value = result.version
    spec.signature_name = result.signature_name
    for alias, array in result.outputs.items():
        response.outputs[alias].CopyFrom(output_tensor(array, result.dtypes[alias], tensor_content))
    return response


async def predict(
    core: Core, request: predict_pb2.PredictRequest, *, deadline: float | None = None
) -> predict_pb2.PredictResponse:
    """`TensorflowPredictor::Predict`."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    with lease(core, target_of(request.model_spec)) as servable:
        result = await run_predict(
            core, servable, request.model_spec.signature_name, request.inputs, request.output_filter,
            deadline=deadline,
        )
    if sum(a.nbytes for a in result.outputs.values()) > OFFLOAD_TENSOR_BYTES:
        return await anyio.to_thread.run_sync(predict_response, request, result, core.tensor_content)
    return predict_response(request, result, core.tensor_content)
