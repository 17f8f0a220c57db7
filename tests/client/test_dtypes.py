"""Every dtype TensorFlow feeds, through aspired-client in its TF-free venv (issue 14): over gRPC each
dtype of the identity model comes back equal (typed-field answers and tensor_content answers); over REST
every dtype TF Serving's JSON API has; and the requests the client builds there are byte-identical to the
official client's (`tf.make_tensor_proto`) for the same arrays."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from tests.client.conftest import run_drive
from tests.client.drive import DTYPES, JSON_DTYPES, encode, samples
from tests.e2e.server import Server
from tests.e2e.test_dtypes import export_identity

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=[False, True], ids=["typed", "tensor_content"])
def identity_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    base = export_identity(tmp_path_factory.mktemp("identity") / "identity")
    flags = ["--model_name=identity", f"--model_base_path={base}"]
    if request.param:
        flags.append("--enable_serialization_as_tensor_content")
    with Server(flags) as server:
        yield server


def expected(name: str, rest: bool = False) -> Any:
    value = samples()[name]
    if name == "bfloat16":  # without ml_dtypes the client answers bfloat16 as (exact) float32
        value = value.astype(np.float32)
    if name == "string" and rest:  # JSON strings: bytes that are not UTF-8 come back replaced (U+FFFD)
        value = np.array([[s.decode(errors="replace").encode() for s in row] for row in value], dtype=object)
    return {"ok": {"y": encode(value)}}


def test_grpc_every_dtype(client_python: Path, identity_server: Server) -> None:
    results = run_drive(client_python, "dtypes", identity_server.grpc_target)
    assert set(results) == set(DTYPES)
    for name in DTYPES:
        assert results[name] == expected(name), name


def test_rest_every_json_dtype(client_python: Path, identity_server: Server) -> None:
    results = run_drive(client_python, "dtypes", identity_server.rest_url)
    assert set(results) == set(JSON_DTYPES)
    for name in JSON_DTYPES:
        assert results[name] == expected(name, rest=True), name


def test_requests_from_the_tf_free_venv_are_byte_identical(client_python: Path) -> None:
    built = run_drive(client_python, "requests")["predict"]
    assert set(built) == set(samples())
    for name, value in samples().items():
        official = predict_pb2.PredictRequest()
        official.model_spec.name = "m"
        official.model_spec.signature_name = "s"
        official.inputs["x"].CopyFrom(tf.make_tensor_proto(value))
        assert base64.b64decode(built[name]) == official.SerializeToString(deterministic=True), name
