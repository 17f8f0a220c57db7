"""Classify, Regress and MultiInference: tf.Example requests over classification and regression signatures.

Mirrors TF Serving's `servables/tensorflow/classifier.cc`, `regressor.cc`, `multi_inference.cc` and
`util.cc`: the same signature rules (one `inputs` string tensor; `classes` and/or `scores` outputs; one
`outputs` tensor of shape [batch] or [batch, 1]), the same validation order and the same error texts. Examples
are serialized and fed as one DT_STRING vector; with a context, each example's bytes are the context's
followed by the example's (a proto merge in which the example's features win). Inference goes through the
batcher like Predict does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf.meta_graph_pb2 import SignatureDef
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    regression_pb2,
)

from svc.errors import Code, ServingError, invalid_argument
from svc.inference.core import Core, Target, Task, lease, run, run_now, signature_name_or_default, target_of
from svc.servables.saved_model import Servable
from svc.types import Array
from svc.wire import tensor_proto as tensors

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
CLASSIFY_INPUTS = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"


# --- signatures (pure) ------------------------------------------------------------------------------------


def _debug_string(signature: SignatureDef) -> str:
    return str(signature)  # protobuf text format, as C++ DebugString()


def _method_check(signature: SignatureDef, method: str, kind: str, check: bool) -> None:
    if check and signature.method_name != method:
        raise invalid_argument(
            f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}"
        )


def preprocess_classification(signature: SignatureDef, check: bool = False) -> tuple[str, list[str]]:
    """`PreProcessClassification`: the input tensor name and the output tensor names (classes, scores)."""
    _method_check(signature, CLASSIFY_METHOD, "classification", check)
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if CLASSIFY_INPUTS not in signature.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {_debug_string(signature)}")
    outputs = [
        signature.outputs[key].name for key in (CLASSIFY_CLASSES, CLASSIFY_SCORES) if key in signature.outputs
    ]
    if not outputs:
        raise invalid_argument(
            'Expected classification signature outputs to contain at least one of "classes" or "scores". '
            f"Signature was: {_debug_string(signature)}"
        )
    return signature.inputs[CLASSIFY_INPUTS].name, outputs


def preprocess_regression(signature: SignatureDef, check: bool = False) -> tuple[str, list[str]]:
    """`PreProcessRegression`: the input tensor name and the one output tensor name."""
    _method_check(signature, REGRESS_METHOD, "regression", check)
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if REGRESS_INPUTS not in signature.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {_debug_string(signature)}")
    if REGRESS_OUTPUTS not in signature.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {_debug_string(signature)}")
    return signature.inputs[REGRESS_INPUTS].name, [signature.outputs[REGRESS_OUTPUTS].name]


def find_signature(servable: Servable, name: str, method: str, check: bool) -> SignatureDef:
    """`GetClassificationSignatureDef` / `GetRegressionSignatureDef`."""
    key = signature_name_or_default(name)
    signature = servable.signatures.get(key)
    if signature is None:
        raise invalid_argument(f"No signature was found with the name: {key}")
    if method == CLASSIFY_METHOD:
        preprocess_classification(signature, check)
    else:
        preprocess_regression(signature, check)
    return signature


# --- examples (pure) ----------------------------------------------------------------------------------------


def serialized_examples(model_input: input_pb2.Input) -> Array:
    """`InputToSerializedExampleTensor`: a DT_STRING vector, one serialized tf.Example per entry."""
    match model_input.WhichOneof("kind"):
        case "example_list":
            items = [e.SerializeToString() for e in model_input.example_list.examples]
        case "example_list_with_context":
            with_context = model_input.example_list_with_context
            context = with_context.context.SerializeToString()
            items = [context + e.SerializeToString() for e in with_context.examples]
        case _:
            items = []
    if not items:
        raise invalid_argument("Input is empty.")
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _shape_text(array: Array) -> str:
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def _dtype_name(array: Array) -> str:
    return str(types_pb2.DataType.Name(tensors.data_type_of(array)))


def _label(value: object) -> str:
    raw = value if isinstance(value, bytes) else str(value).encode()
    return raw.decode("utf-8", "replace")


def postprocess_classification(
    signature: SignatureDef, num_examples: int, output_names: Sequence[str], outputs: Sequence[Array]
) -> classification_pb2.ClassificationResult:
    """`PostProcessClassificationResult`."""
    if len(outputs) != len(output_names):
        raise invalid_argument(f"Expected {len(output_names)} output tensor(s).  Got: {len(outputs)}")
    by_name = dict(zip(output_names, outputs, strict=True))
    classes = (
        by_name.get(signature.outputs[CLASSIFY_CLASSES].name)
        if CLASSIFY_CLASSES in signature.outputs
        else None
    )
    scores = (
        by_name.get(signature.outputs[CLASSIFY_SCORES].name) if CLASSIFY_SCORES in signature.outputs else None
    )
    for tensor, what, dtype in (
        (classes, "classes", types_pb2.DT_STRING),
        (scores, "scores", types_pb2.DT_FLOAT),
    ):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {_shape_text(tensor)}"
            )
        if tensors.data_type_of(tensor) != dtype:
            raise invalid_argument(
                f"Expected {what} Tensor of {types_pb2.DataType.Name(dtype)}. Got: {_dtype_name(tensor)}"
            )
        if tensor.shape[0] != num_examples:
            raise invalid_argument(
                f"Expected {what} output batch size of {num_examples}. Got: {tensor.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    num_classes = 0
    if classes is not None:
        num_classes = classes.shape[1]
    elif scores is not None:
        num_classes = scores.shape[1]
    result = classification_pb2.ClassificationResult()
    labels = classes.tolist() if classes is not None else None
    values = scores.tolist() if scores is not None else None
    for i in range(num_examples):
        entry = result.classifications.add()
        for c in range(num_classes):
            cls = entry.classes.add()
            if labels is not None:
                cls.label = _label(labels[i][c])
            if values is not None:
                cls.score = values[i][c]
    return result


def postprocess_regression(
    signature: SignatureDef, num_examples: int, output_names: Sequence[str], outputs: Sequence[Array]
) -> regression_pb2.RegressionResult:
    """`PostProcessRegressionResult`."""
    if len(outputs) != len(output_names):
        raise invalid_argument("Expected output_tensors and output_tensor_names to have the same size.")
    if REGRESS_OUTPUTS not in signature.outputs:
        raise ServingError(
            Code.FAILED_PRECONDITION,
            f"No regression outputs found in SignatureDef: {_debug_string(signature)}",
        )
    name = signature.outputs[REGRESS_OUTPUTS].name
    by_name = dict(zip(output_names, outputs, strict=True))
    tensor = by_name.get(name)
    if tensor is None:
        raise invalid_argument(f"Could not find output tensor '{name}'")
    if not (tensor.ndim == 1 or (tensor.ndim == 2 and tensor.shape[1] == 1)):
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{_shape_text(tensor)}"
        )
    if tensor.shape[0] != num_examples:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {num_examples} vs. {tensor.shape[0]}"
        )
    if tensors.data_type_of(tensor) != types_pb2.DT_FLOAT:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_name(tensor)}")
    if tensor.size != num_examples:
        raise invalid_argument(f"Expected output batch size to be {num_examples}.  Got: {tensor.size}")
    result = regression_pb2.RegressionResult()
    for value in tensor.reshape(-1).tolist():
        result.regressions.add().value = value
    return result


def make_model_spec(spec: model_pb2.ModelSpec, name: str, signature_name: str, version: int) -> None:
    """`MakeModelSpec`: name, signature (empty -> serving_default), version."""
    spec.Clear()
    spec.name = name
    spec.signature_name = signature_name_or_default(signature_name)
    spec.version.value = version


Q = TypeVar("Q", classification_pb2.ClassificationRequest, regression_pb2.RegressionRequest)


def examples_request(kind: type[Q], target: Target, signature_name: str, model_input: input_pb2.Input) -> Q:
    """The ClassificationRequest or RegressionRequest of a REST call."""
    request = kind(model_spec=target.model_spec(signature_name))
    request.input.CopyFrom(model_input)
    return request


# --- prepare / finish (pure) ------------------------------------------------------------------------------

ExampleResult: TypeAlias = classification_pb2.ClassificationResult | regression_pb2.RegressionResult


@dataclass(frozen=True, slots=True)
class ExampleMethod:
    """The per-method steps of Classify and Regress."""

    name: str
    preprocess: Callable[[SignatureDef, bool], tuple[str, list[str]]]
    postprocess: Callable[[SignatureDef, int, Sequence[str], Sequence[Array]], ExampleResult]


CLASSIFY = ExampleMethod(CLASSIFY_METHOD, preprocess_classification, postprocess_classification)
REGRESS = ExampleMethod(REGRESS_METHOD, preprocess_regression, postprocess_regression)
EXAMPLE_METHODS = {m.name: m for m in (CLASSIFY, REGRESS)}


@dataclass(frozen=True, slots=True)
class ExamplesTask:
    """A prepared Classify or Regress: the run, and what `finish_examples` checks the outputs against."""

    task: Task
    method: ExampleMethod
    signature: SignatureDef
    num_examples: int


def prepare_examples(
    servable: Servable, signature_name: str, model_input: input_pb2.Input, method: ExampleMethod, check: bool
) -> ExamplesTask:
    """The first half of `RunClassify` / `RunRegress`: signature checks, then the serialized examples."""
    signature = find_signature(servable, signature_name, method.name, check)
    input_name, output_names = method.preprocess(signature, check)
    examples = serialized_examples(model_input)
    return ExamplesTask(Task({input_name: examples}, output_names), method, signature, len(examples))


def finish_examples(prepared: ExamplesTask, outputs: Sequence[Array]) -> ExampleResult:
    """The second half: `PostProcessClassificationResult` / `PostProcessRegressionResult`."""
    return prepared.method.postprocess(prepared.signature, prepared.num_examples, prepared.task.fetches, outputs)


@dataclass(frozen=True, slots=True)
class MultiInferenceTask:
    task: Task
    signatures: list[SignatureDef]
    num_examples: int


def _task_signatures(
    servable: Servable, tasks: Sequence[inference_pb2.InferenceTask], check: bool
) -> tuple[list[SignatureDef], set[str], list[str]]:
    """The validation loop of `TensorFlowMultiInferenceRunner::Infer`: each task's signature, the set of input
    tensor names and the sorted set of output tensor names."""
    model_name = ""
    seen: set[str] = set()
    signatures: list[SignatureDef] = []
    inputs: set[str] = set()
    outputs: set[str] = set()
    for task in tasks:
        if not task.model_spec.name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if not model_name:
            model_name = task.model_spec.name
        elif model_name != task.model_spec.name:
            raise invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        key = signature_name_or_default(task.model_spec.signature_name)
        if key in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        signature = servable.signatures.get(key)
        if signature is None:
            raise invalid_argument(f"Requested signature not found in model graph: {key}")
        method = EXAMPLE_METHODS.get(task.method_name)
        if method is None:
            raise ServingError(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}")
        input_name, names = method.preprocess(signature, check)
        signatures.append(signature)
        inputs.add(input_name)
        outputs.update(names)
    return signatures, inputs, sorted(outputs)


def prepare_multi_inference(
    servable: Servable, request: inference_pb2.MultiInferenceRequest, check: bool
) -> MultiInferenceTask:
    """One run feeds the examples to every task's input and fetches every task's outputs."""
    signatures, input_names, output_names = _task_signatures(servable, request.tasks, check)
    examples = serialized_examples(request.input)
    feeds = dict.fromkeys(sorted(input_names), examples)
    return MultiInferenceTask(Task(feeds, output_names), signatures, len(examples))


def finish_multi_inference(
    prepared: MultiInferenceTask,
    request: inference_pb2.MultiInferenceRequest,
    version: int,
    outputs: Sequence[Array],
) -> inference_pb2.MultiInferenceResponse:
    """Results in task order, each with its own ModelSpec."""
    response = inference_pb2.MultiInferenceResponse()
    fetches = prepared.task.fetches
    for task, signature in zip(request.tasks, prepared.signatures, strict=True):
        result = response.results.add()
        if task.method_name == CLASSIFY_METHOD:
            result.classification_result.CopyFrom(
                postprocess_classification(signature, prepared.num_examples, fetches, outputs)
            )
        else:
            result.regression_result.CopyFrom(
                postprocess_regression(signature, prepared.num_examples, fetches, outputs)
            )
        make_model_spec(result.model_spec, task.model_spec.name, task.model_spec.signature_name, version)
    return response


def first_model_spec(request: inference_pb2.MultiInferenceRequest) -> model_pb2.ModelSpec:
    """The ModelSpec that picks the servable of a MultiInference: the first task's."""
    return request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()


# --- the three APIs -----------------------------------------------------------------------------------------


def _record_examples(core: Core, model: str, count: int) -> None:
    """TF Serving's `RecordRequestExampleCount` (servables/tensorflow/util.cc) for Classify/Regress/Multi."""
    if core.metrics is not None:
        core.metrics.examples(model, count)


ExampleRequest: TypeAlias = classification_pb2.ClassificationRequest | regression_pb2.RegressionRequest


R = TypeVar("R", classification_pb2.ClassificationResponse, regression_pb2.RegressionResponse)


async def _answer_examples(
    core: Core, request: ExampleRequest, method: ExampleMethod, response: R, deadline: float | None
) -> R:
    """`RunClassify` / `RunRegress` into `response`: the result, and the ModelSpec of the version that answered."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    spec = request.model_spec
    with lease(core, target_of(spec)) as servable:
        check = core.signature_method_name_check
        prepared = prepare_examples(servable, spec.signature_name, request.input, method, check)
        _record_examples(core, servable.name, prepared.num_examples)
        outputs = await run(core, servable, prepared.task, deadline=deadline)
        response.result.CopyFrom(finish_examples(prepared, outputs))
        make_model_spec(response.model_spec, spec.name, spec.signature_name, servable.version)
    return response


async def classify(
    core: Core, request: classification_pb2.ClassificationRequest, *, deadline: float | None = None
) -> classification_pb2.ClassificationResponse:
    """`TensorflowClassificationServiceImpl::Classify`."""
    return await _answer_examples(core, request, CLASSIFY, classification_pb2.ClassificationResponse(), deadline)


async def regress(
    core: Core, request: regression_pb2.RegressionRequest, *, deadline: float | None = None
) -> regression_pb2.RegressionResponse:
    """`TensorflowRegressionServiceImpl::Regress`."""
    return await _answer_examples(core, request, REGRESS, regression_pb2.RegressionResponse(), deadline)


async def multi_inference(
    core: Core, request: inference_pb2.MultiInferenceRequest, *, deadline: float | None = None
) -> inference_pb2.MultiInferenceResponse:
    """`RunMultiInferenceWithServerCore`: the first task's ModelSpec picks the servable."""
    with lease(core, target_of(first_model_spec(request))) as servable:
        prepared = prepare_multi_inference(servable, request, core.signature_method_name_check)
        _record_examples(core, servable.name, prepared.num_examples)
        outputs = await run(core, servable, prepared.task, deadline=deadline)
        return finish_multi_inference(prepared, request, servable.version, outputs)


# --- without the batcher: warmup ----------------------------------------------------------------------------


def run_examples_now(
    servable: Servable, signature_name: str, model_input: input_pb2.Input, method: ExampleMethod, check: bool
) -> ExampleResult:
    """Classify or Regress on a version that is not serving yet (warmup): the same steps, run in place."""
    prepared = prepare_examples(servable, signature_name, model_input, method, check)
    return finish_examples(prepared, run_now(servable, prepared.task))


def multi_inference_now(
    servable: Servable, request: inference_pb2.MultiInferenceRequest, check: bool
) -> inference_pb2.MultiInferenceResponse:
    prepared = prepare_multi_inference(servable, request, check)
    return finish_multi_inference(prepared, request, servable.version, run_now(servable, prepared.task))
