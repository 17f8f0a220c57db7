"""`svc/_proto` has the generator's layout, and the stubs serve TF Serving's services with the official
tensorflow-serving-api message classes. That it is exactly what `make proto` generates today is checked by
`make lint` (`proto/generate.py --check`: it imports TensorFlow in a subprocess, too slow for the suite)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import grpclib.const
import pytest
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)

from svc._proto.aspired import config_pb2
from svc._proto.inference import grpc_service_grpc, grpc_service_pb2
from svc._proto.tensorflow_serving.apis import model_service_grpc, prediction_service_grpc
from tests import paths

COMMITTED = paths.REPO / "svc" / "_proto"


def tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def generated() -> dict[str, bytes]:
    return tree(COMMITTED)


def test_layout(generated: dict[str, bytes]) -> None:
    assert set(generated) == {
        "__init__.py",
        "aspired/__init__.py",
        "aspired/config_pb2.py",
        "aspired/config_pb2.pyi",
        "inference/__init__.py",
        "inference/grpc_service_grpc.py",
        "inference/grpc_service_pb2.py",
        "inference/grpc_service_pb2.pyi",
        "tensorflow_serving/__init__.py",
        "tensorflow_serving/apis/__init__.py",
        "tensorflow_serving/apis/model_service_grpc.py",
        "tensorflow_serving/apis/prediction_service_grpc.py",
    }


def test_no_machine_paths(generated: dict[str, bytes]) -> None:
    for name, content in generated.items():
        for machine_path in (str(paths.REPO), sys.prefix, "/tmp/"):
            assert machine_path.encode() not in content, (name, machine_path)


def handlers(base: Any) -> dict[str, grpclib.const.Handler]:
    async def handle(self: Any, stream: Any) -> None:
        raise AssertionError("only the mapping is read; no call is made")

    concrete = type("Concrete", (base,), dict.fromkeys(base.__abstractmethods__, handle))
    mapping: dict[str, grpclib.const.Handler] = concrete().__mapping__()
    return mapping


UNARY = grpclib.const.Cardinality.UNARY_UNARY


@pytest.mark.parametrize(
    ("base", "service", "methods"),
    [
        (
            prediction_service_grpc.PredictionServiceBase,
            "tensorflow.serving.PredictionService",
            {
                "Predict": (predict_pb2.PredictRequest, predict_pb2.PredictResponse),
                "Classify": (
                    classification_pb2.ClassificationRequest,
                    classification_pb2.ClassificationResponse,
                ),
                "Regress": (regression_pb2.RegressionRequest, regression_pb2.RegressionResponse),
                "MultiInference": (inference_pb2.MultiInferenceRequest, inference_pb2.MultiInferenceResponse),
                "GetModelMetadata": (
                    get_model_metadata_pb2.GetModelMetadataRequest,
                    get_model_metadata_pb2.GetModelMetadataResponse,
                ),
            },
        ),
        (
            model_service_grpc.ModelServiceBase,
            "tensorflow.serving.ModelService",
            {
                "GetModelStatus": (
                    get_model_status_pb2.GetModelStatusRequest,
                    get_model_status_pb2.GetModelStatusResponse,
                ),
                "HandleReloadConfigRequest": (
                    model_management_pb2.ReloadConfigRequest,
                    model_management_pb2.ReloadConfigResponse,
                ),
            },
        ),
        (
            grpc_service_grpc.GRPCInferenceServiceBase,
            "inference.GRPCInferenceService",
            {
                name: (getattr(grpc_service_pb2, f"{name}Request"), getattr(grpc_service_pb2, f"{name}Response"))
                for name in (
                    "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
                    "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload",
                )
            },
        ),
    ],
)
def test_service_bases_declare_the_official_methods(
    base: Any, service: str, methods: dict[str, tuple[type, type]]
) -> None:
    assert base.__abstractmethods__ == frozenset(methods)
    mapping = handlers(base)
    assert set(mapping) == {f"/{service}/{name}" for name in methods}
    for name, (request, reply) in methods.items():
        handler = mapping[f"/{service}/{name}"]
        assert handler.cardinality is UNARY
        assert handler.request_type is request
        assert handler.reply_type is reply


def test_stubs_use_the_installed_tensorflow_serving() -> None:
    import tensorflow_serving

    # The stub's `import tensorflow_serving.apis.predict_pb2` binds the installed package, not svc/_proto's.
    assert vars(prediction_service_grpc)["tensorflow_serving"] is tensorflow_serving
    assert Path(tensorflow_serving.__file__).parent != COMMITTED / "tensorflow_serving"
    assert hasattr(prediction_service_grpc, "PredictionServiceStub")
    assert hasattr(model_service_grpc, "ModelServiceStub")


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        (
            config_pb2.BatchingParameters,
            {
                "max_batch_size": (1, "google.protobuf.Int64Value"),
                "batch_timeout_micros": (2, "google.protobuf.Int64Value"),
                "max_enqueued_batches": (3, "google.protobuf.Int64Value"),
                "num_batch_threads": (4, "google.protobuf.Int64Value"),
                "thread_pool_name": (5, "google.protobuf.StringValue"),
                "allowed_batch_sizes": (6, "repeated int64"),
                "pad_variable_length_inputs": (7, "bool"),
                "enable_large_batch_splitting": (8, "google.protobuf.BoolValue"),
                "max_execution_batch_size": (9, "google.protobuf.Int64Value"),
            },
        ),
        (config_pb2.PrometheusConfig, {"enable": (1, "bool"), "path": (2, "string")}),
        (config_pb2.MonitoringConfig, {"prometheus_config": (1, "aspired.config.PrometheusConfig")}),
        (
            config_pb2.SSLConfig,
            {
                "server_key": (1, "string"),
                "server_cert": (2, "string"),
                "custom_ca": (3, "string"),
                "client_verify": (4, "bool"),
            },
        ),
    ],
)
def test_config_messages_match_tf_serving(message: Any, fields: dict[str, tuple[int, str]]) -> None:
    def describe(field: Any) -> str:
        if field.message_type is not None:
            return str(field.message_type.full_name)
        scalar = {field.TYPE_BOOL: "bool", field.TYPE_STRING: "string", field.TYPE_INT64: "int64"}[field.type]
        return f"repeated {scalar}" if field.is_repeated else scalar

    actual = {f.name: (f.number, describe(f)) for f in message.DESCRIPTOR.fields}
    assert actual == fields
    assert message.__module__ == "svc._proto.aspired.config_pb2"


# issue 12: the Open Inference Protocol's field numbers, as published (KServe's grpc_predict_v2.proto, Triton's
# grpc_service.proto): a wrong number would parse silently into the wrong field.
V2_FIELDS = {
    "ModelReadyRequest": {"name": 1, "version": 2},
    "ServerMetadataResponse": {"name": 1, "version": 2, "extensions": 3},
    "ModelMetadataRequest": {"name": 1, "version": 2},
    "ModelMetadataResponse": {"name": 1, "versions": 2, "platform": 3, "inputs": 4, "outputs": 5},
    "ModelMetadataResponse.TensorMetadata": {"name": 1, "datatype": 2, "shape": 3},
    "InferParameter": {"bool_param": 1, "int64_param": 2, "string_param": 3, "double_param": 4, "uint64_param": 5},
    "InferTensorContents": {
        "bool_contents": 1, "int_contents": 2, "int64_contents": 3, "uint_contents": 4, "uint64_contents": 5,
        "fp32_contents": 6, "fp64_contents": 7, "bytes_contents": 8,
    },
    "ModelInferRequest": {
        "model_name": 1, "model_version": 2, "id": 3, "parameters": 4, "inputs": 5, "outputs": 6,
        "raw_input_contents": 7,
    },
    "ModelInferRequest.InferInputTensor": {"name": 1, "datatype": 2, "shape": 3, "parameters": 4, "contents": 5},
    "ModelInferRequest.InferRequestedOutputTensor": {"name": 1, "parameters": 2},
    "ModelInferResponse": {
        "model_name": 1, "model_version": 2, "id": 3, "parameters": 4, "outputs": 5, "raw_output_contents": 6,
    },
    "ModelInferResponse.InferOutputTensor": {"name": 1, "datatype": 2, "shape": 3, "parameters": 4, "contents": 5},
    "ModelRepositoryParameter": {"bool_param": 1, "int64_param": 2, "string_param": 3, "bytes_param": 4},
    "RepositoryIndexRequest": {"repository_name": 1, "ready": 2},
    "RepositoryIndexResponse": {"models": 1},
    "RepositoryIndexResponse.ModelIndex": {"name": 1, "version": 2, "state": 3, "reason": 4},
    "RepositoryModelLoadRequest": {"repository_name": 1, "model_name": 2, "parameters": 3},
    "RepositoryModelUnloadRequest": {"repository_name": 1, "model_name": 2, "parameters": 3},
}


@pytest.mark.parametrize("name", sorted(V2_FIELDS))
def test_v2_messages_match_the_published_protocol(name: str) -> None:
    descriptor = grpc_service_pb2.DESCRIPTOR.message_types_by_name[name.split(".")[0]]
    for nested in name.split(".")[1:]:
        descriptor = descriptor.nested_types_by_name[nested]
    assert descriptor.full_name == f"inference.{name}"
    assert {f.name: f.number for f in descriptor.fields} == V2_FIELDS[name]
