"""Classify, Regress and MultiInference through the official gRPC client and over REST, against TF Serving's
test models, with and without `--enable_batching` (TF Serving's own batching_config.txt)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeAlias

import grpc
import httpx
import pytest
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.e2e.conftest import MODELS, write_config
from tests.e2e.server import Server
from tests.paths import testdata

pytestmark = pytest.mark.e2e

Stub: TypeAlias = Any  # tensorflow-serving-api's stubs have no type hints
new_stub = prediction_service_pb2_grpc.PredictionServiceStub


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = write_config(
        tmp_path_factory.mktemp("batching") / "models.config",
        MODELS,
        {"two_versions": "    model_version_policy { all {} }\n"},
    )
    server = Server(
        [
            f"--model_config_file={config}",
            "--file_system_poll_wait_seconds=0",
            "--enable_batching",
            f"--batching_parameters_file={testdata('batching_config.txt')}",
        ]
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def checking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    models = {k: MODELS[k] for k in ("half_plus_two", "half_plus_two_tf2")}
    config = write_config(tmp_path_factory.mktemp("checking") / "models.config", models)
    server = Server([f"--model_config_file={config}", "--enable_signature_method_name_check"])
    with server:
        yield server


@pytest.fixture(scope="module", params=["plain", "batching"])
def server(request: pytest.FixtureRequest) -> Server:
    name = "multi_server" if request.param == "plain" else "batching_server"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[Stub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield new_stub(channel)


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.rest_url, timeout=30) as client:
        yield client


def example(**features: float) -> example_pb2.Example:
    ex = example_pb2.Example()
    for key, value in features.items():
        ex.features.feature[key].float_list.value.append(value)
    return ex


def classify_request(
    model: str,
    signature: str,
    *xs: float,
    context: example_pb2.Example | None = None,
    version: int | None = None,
) -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if context is not None:
        request.input.example_list_with_context.context.CopyFrom(context)
        examples = request.input.example_list_with_context.examples
    else:
        examples = request.input.example_list.examples
    for x in xs:
        examples.append(example(x=x))
    return request


def regress_request(model: str, signature: str, *xs: float) -> regression_pb2.RegressionRequest:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.input.example_list.examples.extend(example(x=x) for x in xs)
    return request


def rpc_error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


# --- gRPC ---------------------------------------------------------------------------------------------------


def test_classify_scores_with_empty_labels(stub: Stub) -> None:
    response = stub.Classify(classify_request("half_plus_two", "classify_x_to_y", 1.0, 2.0, 5.0), timeout=30)
    assert [[(c.label, c.score) for c in cs.classes] for cs in response.result.classifications] == [
        [("", 2.5)],
        [("", 3.0)],
        [("", 4.5)],
    ]
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "classify_x_to_y"


def test_classify_with_context(stub: Stub) -> None:
    request = classify_request("half_plus_two", "classify_x_to_y", context=example(x=4.0))
    request.input.example_list_with_context.examples.add()  # takes x from the context
    request.input.example_list_with_context.examples.append(example(x=1.0))  # its own x wins
    response = stub.Classify(request, timeout=30)
    assert [cs.classes[0].score for cs in response.result.classifications] == [4.0, 2.5]


def test_regress(stub: Stub) -> None:
    response = stub.Regress(regress_request("half_plus_two", "regress_x_to_y", 2.0, 4.0), timeout=30)
    assert [r.value for r in response.result.regressions] == [3.0, 4.0]
    assert response.model_spec.signature_name == "regress_x_to_y"
    response = stub.Regress(regress_request("half_plus_two", "regress_x_to_y2", 2.0), timeout=30)
    assert [r.value for r in response.result.regressions] == [4.0]


def test_half_plus_three_regress_signature(stub: Stub) -> None:
    response = stub.Regress(
        regress_request("half_plus_three", "tensorflow/serving/regress", 1.0, 2.0), timeout=30
    )
    assert [r.value for r in response.result.regressions] == [3.5, 4.0]


def test_tf2_signatures_work_without_the_method_name_check(stub: Stub) -> None:
    classified = stub.Classify(classify_request("half_plus_two_tf2", "classify_x_to_y", 2.0), timeout=30)
    assert classified.result.classifications[0].classes[0].score == 3.0
    regressed = stub.Regress(regress_request("half_plus_two_tf2", "regress_x_to_y", 2.0), timeout=30)
    assert [r.value for r in regressed.result.regressions] == [3.0]


def test_two_versions_by_version(stub: Stub) -> None:
    request = classify_request("two_versions", "classify_x_to_y", 2.0, version=124)
    response = stub.Classify(request, timeout=30)
    assert response.model_spec.version.value == 124


def test_multi_inference_results_in_task_order(stub: Stub) -> None:
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (
        ("regress_x_to_y2", "tensorflow/serving/regress"),
        ("classify_x_to_y", "tensorflow/serving/classify"),
        ("regress_x_to_y", "tensorflow/serving/regress"),
    ):
        task = request.tasks.add()
        task.model_spec.name = "half_plus_two"
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.extend([example(x=2.0), example(x=6.0)])
    response = stub.MultiInference(request, timeout=30)
    first, second, third = response.results
    assert [r.value for r in first.regression_result.regressions] == [4.0, 6.0]
    assert [c.classes[0].score for c in second.classification_result.classifications] == [3.0, 5.0]
    assert [r.value for r in third.regression_result.regressions] == [3.0, 5.0]
    assert [r.model_spec.signature_name for r in response.results] == [
        "regress_x_to_y2",
        "classify_x_to_y",
        "regress_x_to_y",
    ]
    assert {r.model_spec.version.value for r in response.results} == {123}


def multi(*tasks: tuple[str, str, str]) -> inference_pb2.MultiInferenceRequest:
    request = inference_pb2.MultiInferenceRequest()
    for model, signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.append(example(x=1.0))
    return request


CLASSIFY, REGRESS = "tensorflow/serving/classify", "tensorflow/serving/regress"


@pytest.mark.parametrize(
    ("request_pb", "code", "message"),
    [
        (multi(), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
        (
            multi(("half_plus_two", "classify_x_to_y", CLASSIFY), ("", "regress_x_to_y", REGRESS)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Found ModelSpec with an empty model name.",
        ),
        (
            multi(
                ("half_plus_two", "classify_x_to_y", CLASSIFY), ("half_plus_three", "regress_x_to_y", REGRESS)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
        ),
        (
            multi(
                ("half_plus_two", "regress_x_to_y", REGRESS), ("half_plus_two", "regress_x_to_y", CLASSIFY)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Duplicate evaluation of signature: regress_x_to_y",
        ),
        (
            multi(("half_plus_two", "nope", REGRESS)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Requested signature not found in model graph: nope",
        ),
        (
            multi(("half_plus_two", "regress_x_to_y", "tensorflow/serving/predict")),
            grpc.StatusCode.UNIMPLEMENTED,
            "Unsupported signature method_name: tensorflow/serving/predict",
        ),
        (
            multi(("nope", "regress_x_to_y", REGRESS)),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        ),
    ],
)
def test_multi_inference_errors(
    stub: Stub, request_pb: inference_pb2.MultiInferenceRequest, code: grpc.StatusCode, message: str
) -> None:
    error = rpc_error(lambda: stub.MultiInference(request_pb, timeout=30))
    assert error.code() == code
    assert error.details() == message


def test_classify_errors(stub: Stub) -> None:
    error = rpc_error(lambda: stub.Classify(classification_pb2.ClassificationRequest(), timeout=30))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    error = rpc_error(lambda: stub.Classify(classify_request("half_plus_two", "nope", 1.0), timeout=30))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "No signature was found with the name: nope",
    )
    error = rpc_error(lambda: stub.Classify(classify_request("half_plus_two", "classify_x_to_y"), timeout=30))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
    error = rpc_error(lambda: stub.Classify(classify_request("half_plus_two", "", 1.0), timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(
        'No classification inputs found in SignatureDef: inputs {\n  key: "x"\n'
    )
    error = rpc_error(
        lambda: stub.Classify(classify_request("half_plus_two", "regress_x_to_y", 1.0), timeout=30)
    )
    assert error.details().startswith(
        'Expected classification signature outputs to contain at least one of "classes" or "scores". '
        "Signature was: "
    )
    error = rpc_error(lambda: stub.Classify(classify_request("nope", "", 1.0), timeout=30))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    )


def test_regress_errors(stub: Stub) -> None:
    error = rpc_error(
        lambda: stub.Regress(regress_request("half_plus_two", "classify_x_to_y", 1.0), timeout=30)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("No regression outputs found in SignatureDef: ")
    missing_feature = regress_request("half_plus_two", "regress_x_to_y")
    missing_feature.input.example_list.examples.add()
    error = rpc_error(lambda: stub.Regress(missing_feature, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # TF's ParseExample: feature x is required


def test_method_name_check(checking_server: Server) -> None:
    with grpc.insecure_channel(checking_server.grpc_target) as channel:
        stub = new_stub(channel)
        error = rpc_error(
            lambda: stub.Classify(classify_request("half_plus_two_tf2", "classify_x_to_y", 2.0))
        )
        assert (error.code(), error.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            (
                "Expected classification signature method_name to be tensorflow/serving/classify. "
                "Was: tensorflow/serving/predict"
            ),
        )
        error = rpc_error(lambda: stub.Regress(regress_request("half_plus_two_tf2", "regress_x_to_y", 2.0)))
        assert error.details() == (
            "Expected regression signature method_name to be tensorflow/serving/regress. "
            "Was: tensorflow/serving/predict"
        )
        # TF1 exports carry the right method names.
        response = stub.Classify(classify_request("half_plus_two", "classify_x_to_y", 2.0), timeout=30)
        assert response.result.classifications[0].classes[0].score == 3.0


# --- REST ---------------------------------------------------------------------------------------------------


def test_rest_classify(http: httpx.Client) -> None:
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    r = http.post("/v1/models/half_plus_two:classify", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [[["", 3.0]]]}


def test_rest_regress(http: httpx.Client) -> None:
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    assert http.post("/v1/models/half_plus_two:regress", json=body).json() == {"results": [3.0]}
    body = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}
    assert http.post("/v1/models/half_plus_three:regress", json=body).json() == {"results": [3.5, 4.0]}


def test_rest_context_and_version(http: httpx.Client) -> None:
    body = {"signature_name": "regress_x_to_y", "context": {"x": 4.0}, "examples": [{}, {"x": 0.0}]}
    r = http.post("/v1/models/two_versions/versions/123:regress", json=body)
    assert r.json() == {"results": [4.0, 2.0]}


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        (
            "/v1/models/half_plus_two:classify",
            b'{"signature_name": "nope", "examples": [{"x": 1.0}]}',
            400,
            "No signature was found with the name: nope",
        ),
        (
            "/v1/models/half_plus_two:regress",
            b'{"signature_name": "regress_x_to_y"}',
            400,
            "When method is classify, key 'examples' is expected and was not found",
        ),
        (
            "/v1/models/nope:regress",
            b'{"examples": [{"x": 1.0}]}',
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            "/v1/models/half_plus_two:regress",
            b'{"examples": [{"x": 1.0}]}',
            400,
            "No regression inputs found in SignatureDef",
        ),
        # JSON 2 is an int64 feature: TF's ParseExample refuses it for the float feature x.
        (
            "/v1/models/half_plus_two:regress",
            b'{"signature_name": "regress_x_to_y", "examples": [{"x": 2}]}',
            400,
            "",
        ),
    ],
)
def test_rest_errors(http: httpx.Client, path: str, body: bytes, status: int, error: str) -> None:
    r = http.post(path, content=body)
    assert r.status_code == status, r.text
    assert error in r.json()["error"]
