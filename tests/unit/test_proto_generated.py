"""`svc/_proto` is what `make proto` generates today, and the stubs serve TF Serving's services with the
official tensorflow-serving-api message classes."""

from __future__ import annotations

import subprocess
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
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("proto") / "_proto"
    subprocess.run(
        [sys.executable, str(paths.REPO / "proto" / "generate.py"), f"--out={out}"],
        check=True,
        capture_output=True,
    )
    return tree(out)


def test_committed_output_is_what_the_generator_writes(generated: dict[str, bytes]) -> None:
    committed = tree(COMMITTED)
    assert sorted(committed) == sorted(generated), "run `make proto` and commit svc/_proto"
    for name, content in generated.items():
        assert committed[name] == content, f"svc/_proto/{name} is stale: run `make proto`"


def test_layout(generated: dict[str, bytes]) -> None:
    assert set(generated) == {
        "__init__.py",
        "aspired/__init__.py",
        "aspired/config_pb2.py",
        "aspired/config_pb2.pyi",
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
