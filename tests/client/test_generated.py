"""The client's private messages (issue 14) are what `make proto` writes, import nothing but each other and
google.protobuf, and keep TF Serving's field numbers under private full names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from aspired_client._pb.tensorflow_serving.apis import predict_pb2 as client_predict_pb2
from tensorflow_serving.apis import predict_pb2

from tests import paths

COMMITTED = paths.REPO / "clients" / "python" / "aspired_client" / "_pb"


def tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("client-proto") / "_pb"
    subprocess.run(
        [sys.executable, str(paths.REPO / "proto" / "generate.py"), f"--client-out={out}"],
        check=True,
        capture_output=True,
    )
    return tree(out)


def test_committed_output_is_what_the_generator_writes(generated: dict[str, bytes]) -> None:
    committed = tree(COMMITTED)
    assert sorted(committed) == sorted(generated), "run `make proto` and commit clients/python/aspired_client/_pb"
    for name, content in generated.items():
        assert committed[name] == content, f"aspired_client/_pb/{name} is stale: run `make proto`"


def test_imports_stay_private(generated: dict[str, bytes]) -> None:
    for name, content in generated.items():
        if not name.endswith(".py"):
            continue
        for line in content.decode().splitlines():
            found = re.match(r"(?:from|import) ([\w.]+)", line)
            if found:
                assert found.group(1).startswith(("aspired_client._pb", "google.protobuf")), (name, line)
        for machine_path in (str(paths.REPO), sys.prefix, "/tmp/"):
            assert machine_path.encode() not in content, (name, machine_path)


def test_same_fields_private_names() -> None:
    def fields(message: object) -> dict[str, tuple[int, int]]:
        descriptor = message.DESCRIPTOR  # type: ignore[attr-defined]
        return {f.name: (f.number, f.type) for f in descriptor.fields}

    assert fields(client_predict_pb2.PredictRequest) == fields(predict_pb2.PredictRequest)
    assert client_predict_pb2.DESCRIPTOR.name == "aspired_client/_pb/tensorflow_serving/apis/predict.proto"
    assert client_predict_pb2.PredictRequest.DESCRIPTOR.full_name.startswith("aspired_client._pb.tensorflow.")
