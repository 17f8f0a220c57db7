"""Servers shared by the e2e tests: started once per session, on loopback, against TF Serving's models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from tests.e2e.server import Server
from tests.paths import testdata

MODELS = {
    "half_plus_two": "saved_model_half_plus_two_cpu",
    "half_plus_two_tf2": "saved_model_half_plus_two_tf2_cpu",
    "half_plus_three": "saved_model_half_plus_three",
    "two_versions": "saved_model_half_plus_two_2_versions",
    "counter": "saved_model_counter",
}


def write_config(path: Path, models: dict[str, str], extra: dict[str, str] | None = None) -> Path:
    parts = []
    for name, directory in models.items():
        body = f'    name: "{name}"\n    base_path: "{testdata(directory)}"\n    model_platform: "tensorflow"\n'
        body += (extra or {}).get(name, "")
        parts.append("  config {\n" + body + "  }\n")
    path.write_text("model_config_list {\n" + "".join(parts) + "}\n")
    return path


@pytest.fixture(scope="session")
def multi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Many models from a --model_config_file, as a TF Serving user configures them."""
    config = write_config(
        tmp_path_factory.mktemp("config") / "models.config",
        MODELS,
        {"two_versions": "    model_version_policy { all {} }\n"},
    )
    server = Server([f"--model_config_file={config}", "--file_system_poll_wait_seconds=0"])
    with server:
        yield server


@pytest.fixture(scope="session")
def default_server() -> Iterator[Server]:
    """Single-model mode: --model_base_path with the default model name `default`."""
    server = Server([f"--model_base_path={testdata('saved_model_half_plus_two_cpu')}"])
    with server:
        yield server


@pytest.fixture(scope="session")
def channel(multi_server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(multi_server.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="session")
def prediction_stub(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="session")
def model_stub(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)
