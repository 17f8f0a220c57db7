"""Classify / Regress signature rules and result conversion (TF Serving's classifier.cc, regressor.cc, util.cc)
as pure functions: tables of signatures, tensors and TF Serving's texts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow.core.example import example_pb2
from tensorflow.core.protobuf.meta_graph_pb2 import SignatureDef
from tensorflow_serving.apis import input_pb2

from svc.errors import Code, ServingError
from svc.inference.classify_regress import (
    postprocess_classification,
    postprocess_regression,
    preprocess_classification,
    preprocess_regression,
    serialized_examples,
)


def signature(text: str) -> Any:
    return text_format.Parse(text, SignatureDef())


CLASSIFY = signature(
    'method_name: "tensorflow/serving/classify" '
    'inputs { key: "inputs" value { name: "tf_example:0" } } '
    'outputs { key: "classes" value { name: "classes:0" } } '
    'outputs { key: "scores" value { name: "scores:0" } }'
)
SCORES_ONLY = signature(
    'method_name: "tensorflow/serving/classify" '
    'inputs { key: "inputs" value { name: "tf_example:0" } } '
    'outputs { key: "scores" value { name: "y:0" } }'
)
REGRESS = signature(
    'method_name: "tensorflow/serving/regress" '
    'inputs { key: "inputs" value { name: "tf_example:0" } } '
    'outputs { key: "outputs" value { name: "y:0" } }'
)
PREDICT = signature(
    'method_name: "tensorflow/serving/predict" '
    'inputs { key: "x" value { name: "x:0" } } outputs { key: "y" value { name: "y:0" } }'
)


def error_of(call: Any) -> ServingError:
    with pytest.raises(ServingError) as info:
        call()
    return info.value


def test_classification_signature_tensors() -> None:
    assert preprocess_classification(CLASSIFY) == ("tf_example:0", ["classes:0", "scores:0"])
    assert preprocess_classification(SCORES_ONLY) == ("tf_example:0", ["y:0"])
    assert preprocess_regression(REGRESS) == ("tf_example:0", ["y:0"])


@pytest.mark.parametrize(
    ("sig", "message"),
    [
        ('inputs { key: "a" } inputs { key: "b" } outputs { key: "scores" }', "Expected one input Tensor."),
        ('inputs { key: "inputs" }', "Expected one or two output Tensors, found 0"),
        (
            'inputs { key: "inputs" } outputs { key: "a" } outputs { key: "b" } outputs { key: "c" }',
            "Expected one or two output Tensors, found 3",
        ),
        ('inputs { key: "x" } outputs { key: "scores" }', "No classification inputs found in SignatureDef: "),
        (
            'inputs { key: "inputs" } outputs { key: "y" }',
            (
                'Expected classification signature outputs to contain at least one of "classes" or "scores". '
                "Signature was: "
            ),
        ),
    ],
)
def test_classification_signature_errors(sig: str, message: str) -> None:
    error = error_of(lambda: preprocess_classification(signature(sig)))
    assert error.code is Code.INVALID_ARGUMENT
    assert error.message.startswith(message)


@pytest.mark.parametrize(
    ("sig", "message"),
    [
        ('outputs { key: "outputs" }', "Expected one input Tensor."),
        ('inputs { key: "inputs" } outputs { key: "a" } outputs { key: "b" }', "Expected one output Tensor."),
        ('inputs { key: "x" } outputs { key: "outputs" }', "No regression inputs found in SignatureDef: "),
        ('inputs { key: "inputs" } outputs { key: "y" }', "No regression outputs found in SignatureDef: "),
    ],
)
def test_regression_signature_errors(sig: str, message: str) -> None:
    error = error_of(lambda: preprocess_regression(signature(sig)))
    assert error.code is Code.INVALID_ARGUMENT
    assert error.message.startswith(message)


def test_signature_text_is_the_debug_string() -> None:
    error = error_of(lambda: preprocess_regression(PREDICT))
    assert error.message == (
        'No regression inputs found in SignatureDef: inputs {\n  key: "x"\n  value {\n    name: "x:0"\n  }\n}\n'
        'outputs {\n  key: "y"\n  value {\n    name: "y:0"\n  }\n}\nmethod_name: "tensorflow/serving/predict"\n'
    )


def test_method_name_check_only_when_enabled() -> None:
    tf2 = signature(str(SCORES_ONLY).replace("tensorflow/serving/classify", "tensorflow/serving/predict"))
    assert preprocess_classification(tf2, check=False) == ("tf_example:0", ["y:0"])
    assert error_of(lambda: preprocess_classification(tf2, check=True)).message == (
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict"
    )
    assert error_of(lambda: preprocess_regression(PREDICT, check=True)).message == (
        "Expected regression signature method_name to be tensorflow/serving/regress. Was: tensorflow/serving/predict"
    )


def example(**features: float) -> example_pb2.Example:
    ex = example_pb2.Example()
    for key, value in features.items():
        ex.features.feature[key].float_list.value.append(value)
    return ex


def test_examples_with_context_are_context_bytes_then_example_bytes() -> None:
    model_input = input_pb2.Input()
    model_input.example_list_with_context.context.CopyFrom(example(x=4.0, z=1.0))
    model_input.example_list_with_context.examples.extend([example(), example(x=1.0)])
    serialized = serialized_examples(model_input)
    assert serialized.dtype == object
    assert serialized.shape == (2,)
    # Compared parsed: the byte order of a protobuf map (`features.feature`) is not defined (issue 9).
    context = example(x=4.0, z=1.0)
    size = context.ByteSize()
    for serialized_example, expected in zip(serialized, [example(), example(x=1.0)], strict=True):
        assert example_pb2.Example.FromString(serialized_example[:size]) == context
        assert example_pb2.Example.FromString(serialized_example[size:]) == expected
    merged = example_pb2.Example.FromString(serialized[1])
    assert merged.features.feature["x"].float_list.value == [1.0]  # the example wins
    assert merged.features.feature["z"].float_list.value == [1.0]


@pytest.mark.parametrize(
    "model_input",
    [input_pb2.Input(), input_pb2.Input(example_list=input_pb2.ExampleList())],
)
def test_empty_input(model_input: Any) -> None:
    error = error_of(lambda: serialized_examples(model_input))
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, "Input is empty.")


def test_classification_result_with_classes_and_scores() -> None:
    classes = np.array([[b"a", b"b"], [b"c", b"d"]], dtype=object)
    scores = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    result = postprocess_classification(CLASSIFY, 2, ["classes:0", "scores:0"], [classes, scores])
    assert [[(c.label, c.score) for c in cs.classes] for cs in result.classifications] == [
        [("a", 0.25), ("b", 0.75)],
        [("c", 0.5), ("d", 0.5)],
    ]


def test_classification_result_without_classes_has_empty_labels() -> None:
    result = postprocess_classification(SCORES_ONLY, 1, ["y:0"], [np.array([[3.0]], np.float32)])
    assert [(c.label, c.score) for c in result.classifications[0].classes] == [("", 3.0)]


@pytest.mark.parametrize(
    ("scores", "n", "message"),
    [
        (np.array([3.0], np.float32), 1, "Expected Tensor shape: [batch_size num_classes] but got [1]"),
        (np.array([[3.0]], np.float64), 1, "Expected scores Tensor of DT_FLOAT. Got: DT_DOUBLE"),
        (np.array([[3.0]], np.float32), 2, "Expected scores output batch size of 2. Got: 1"),
    ],
)
def test_classification_result_errors(scores: Any, n: int, message: str) -> None:
    error = error_of(lambda: postprocess_classification(SCORES_ONLY, n, ["y:0"], [scores]))
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, message)


def test_classes_and_scores_must_agree() -> None:
    classes = np.array([[b"a"]], dtype=object)
    scores = np.array([[0.1, 0.9]], dtype=np.float32)
    error = error_of(
        lambda: postprocess_classification(CLASSIFY, 1, ["classes:0", "scores:0"], [classes, scores])
    )
    assert error.message == "Tensors class and score should match in dim_size(1). Got 1 vs. 2"
    error = error_of(
        lambda: postprocess_classification(CLASSIFY, 1, ["classes:0", "scores:0"], [np.ones((1, 1)), scores])
    )
    assert error.message == "Expected classes Tensor of DT_STRING. Got: DT_DOUBLE"


@pytest.mark.parametrize("shape", [(3,), (3, 1)])
def test_regression_result(shape: tuple[int, ...]) -> None:
    values = np.array([1.5, 2.5, 3.5], np.float32).reshape(shape)
    result = postprocess_regression(REGRESS, 3, ["y:0"], [values])
    assert [r.value for r in result.regressions] == [1.5, 2.5, 3.5]


@pytest.mark.parametrize(
    ("values", "n", "message"),
    [
        (
            np.ones((2, 2), np.float32),
            2,
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [2,2]",
        ),
        (np.ones((2,), np.float32), 3, "Input batch size did not match output batch size: 3 vs. 2"),
        (np.ones((2,), np.float64), 2, "Expected output Tensor of DT_FLOAT.  Got: DT_DOUBLE"),
    ],
)
def test_regression_result_errors(values: Any, n: int, message: str) -> None:
    error = error_of(lambda: postprocess_regression(REGRESS, n, ["y:0"], [values]))
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, message)
