"""Issue 13: SavedModels TF Serving cannot load without a rebuild. A tensorflow-text tokenizer model served with
`--custom_op_modules=tensorflow_text` answers tokens over REST and gRPC; without the flag start-up fails with
the flag and package named; added later it ends END with that message while the other models keep serving;
tensorflow-text's own op library loaded with `--custom_op_libraries` serves a model using its op; Keras 3
`model.export` and tf_keras SavedModels answer what the in-process models answered.

The models are exported by `tests/e2e/custom_op_exports.py` in a subprocess and served by server subprocesses:
this process never imports tensorflow_text (its ops would stay registered here for good).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from svc.servables.custom_ops import TENSORFLOW_TEXT, op_package
from tests.e2e.server import ServerProcess, free_port
from tests.paths import REPO, testdata

pytestmark = pytest.mark.e2e

NOT_REGISTERED = re.compile(r"Op type not registered '([^']+)'")
KERAS_MODELS = ("keras3", "tf_keras", "tf_keras_saved_model")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    base = tmp_path_factory.mktemp("custom_ops")
    subprocess.run(
        [sys.executable, "-m", "tests.e2e.custom_op_exports", str(base)], cwd=REPO, check=True, timeout=600
    )
    return base, json.loads((base / "expected.json").read_text())


def config_file(path: Path, models: dict[str, Path]) -> Path:
    parts = "".join(
        f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" }}\n'
        for name, base in models.items()
    )
    path.write_text(f"model_config_list {{\n{parts}}}\n")
    return path


def whitespace_op_library() -> str:
    """tensorflow-text's op library of the WhitespaceTokenizer (a .so shipped in its wheel), found without
    importing tensorflow_text."""
    spec = importlib.util.find_spec("tensorflow_text")
    assert spec is not None, "tensorflow-text is a dev dependency"
    assert spec.origin is not None
    library = Path(spec.origin).parent / "python" / "ops" / "_whitespace_tokenizer_v2.so"
    assert library.is_file(), library
    return str(library)


@dataclass
class Servers:
    served: ServerProcess  # --custom_op_modules=tensorflow_text: text, keras3, tf_keras
    library: ServerProcess  # --custom_op_libraries=<the WhitespaceTokenizer's .so>: half_plus_two, words
    unflagged: subprocess.Popen[str]  # the text model without any flag: start-up must fail
    unflagged_log: Path


@pytest.fixture(scope="module")
def servers(exported: tuple[Path, dict[str, Any]]) -> Iterator[Servers]:
    """The three server processes of this module, started at once (their TensorFlow imports overlap)."""
    base, _ = exported
    served_config = config_file(base / "served.config", {name: base / name for name in ("text", *KERAS_MODELS)})
    library_models = {"half_plus_two": testdata("saved_model_half_plus_two_cpu"), "words": base / "words"}
    library_config = config_file(base / "library.config", library_models)
    served = ServerProcess([f"--model_config_file={served_config}", "--custom_op_modules=tensorflow_text"])
    library = ServerProcess(
        [f"--model_config_file={library_config}", f"--custom_op_libraries={whitespace_op_library()}"]
    )
    log = base / "unflagged.log"
    command = [sys.executable, "-m", "svc", f"--port={free_port()}", "--model_name=text",
               f"--model_base_path={base / 'text'}"]  # fmt: skip
    with log.open("w") as out:
        unflagged = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        with ThreadPoolExecutor(2) as pool:
            for started in [pool.submit(served.start, 300), pool.submit(library.start, 300)]:
                started.result()
        yield Servers(served, library, unflagged, log)
    finally:
        served.stop()
        library.stop()
        if unflagged.poll() is None:
            unflagged.kill()
        unflagged.wait()


@pytest.fixture(scope="module")
def served(servers: Servers) -> ServerProcess:
    return servers.served


@pytest.fixture(scope="module")
def library_server(servers: Servers) -> ServerProcess:
    return servers.library


def assert_names_the_flag_and_package(message: str) -> None:
    match = NOT_REGISTERED.search(message)
    assert match is not None, message
    assert op_package(match[1]) == TENSORFLOW_TEXT
    assert "--custom_op_modules=tensorflow_text" in message
    assert "tensorflow-text" in message


def predict_grpc(server: ServerProcess, model: str, inputs: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def decoded(array: np.ndarray) -> list[list[str]]:
    return [[item.decode() for item in row] for row in array]


# --- tensorflow-text through --custom_op_modules --------------------------------------------------------------


def test_tokens_over_rest(served: ServerProcess, exported: tuple[Path, dict[str, Any]]) -> None:
    _, expected = exported
    response = httpx.post(
        f"{served.rest_url}/v1/models/text:predict", json={"instances": expected["sentences"]}, timeout=30
    )
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    assert [row["tokens"] for row in rows] == expected["text"]["tokens"]
    assert [row["ids"] for row in rows] == expected["text"]["ids"]
    assert rows[0]["tokens"][:4] == ["the", "quick", "brown", "fox"]


def test_tokens_over_grpc(served: ServerProcess, exported: tuple[Path, dict[str, Any]]) -> None:
    _, expected = exported
    outputs = predict_grpc(served, "text", {"text": tf.constant(expected["sentences"])})
    assert decoded(outputs["tokens"]) == expected["text"]["tokens"]
    assert outputs["ids"].tolist() == expected["text"]["ids"]


def test_the_op_table_knows_every_op_tensorflow_text_registers(served: ServerProcess) -> None:
    (loaded,) = [e for e in served.log_events() if e.get("event") == "custom_ops_loaded"]
    assert loaded["modules"] == ["tensorflow_text"]
    ops = loaded["ops"]
    assert isinstance(ops, list)
    assert "TFText>WhitespaceTokenizeWithOffsetsV2" in ops
    assert {op: op_package(op) for op in ops} == dict.fromkeys(ops, TENSORFLOW_TEXT)


def test_without_the_module_startup_fails_naming_the_flag_and_package(servers: Servers) -> None:
    assert servers.unflagged.wait(timeout=300) == 255
    output = servers.unflagged_log.read_text()
    (line,) = [line for line in output.splitlines() if line.startswith("Failed to start server.")]
    assert line.startswith(
        "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
        "{{name: text version: 1} due to error: NOT_FOUND: Op type not registered '"
    )
    assert_names_the_flag_and_package(line)
    # not retried: an op registry does not change while the server runs
    assert '"servable_load_retry"' not in output


# --- an op library through --custom_op_libraries, and a model added later ----------------------------------


def test_an_op_library_serves_a_model_using_its_op(
    library_server: ServerProcess, exported: tuple[Path, dict[str, Any]]
) -> None:
    _, expected = exported
    response = httpx.post(
        f"{library_server.rest_url}/v1/models/words:predict", json={"instances": expected["sentences"]}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected["words"]["tokens"]}
    (loaded,) = [e for e in library_server.log_events() if e.get("event") == "custom_ops_loaded"]
    assert loaded["ops"] == ["TFText>WhitespaceTokenizeWithOffsetsV2"]


def test_a_model_added_later_ends_end_with_the_hint_while_the_others_serve(
    library_server: ServerProcess, exported: tuple[Path, dict[str, Any]]
) -> None:
    base, expected = exported
    request = model_management_pb2.ReloadConfigRequest()
    models = {"half_plus_two": testdata("saved_model_half_plus_two_cpu"), "words": base / "words",
              "text": base / "text"}  # fmt: skip
    for name, path in models.items():
        config = request.config.model_config_list.config.add()
        config.name, config.base_path, config.model_platform = name, str(path), "tensorflow"
    with grpc.insecure_channel(library_server.grpc_target) as channel:
        model_service = model_service_pb2_grpc.ModelServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            model_service.HandleReloadConfigRequest(request, timeout=120)
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        assert info.value.details().startswith("1 model(s) did not become available: {{name: text version: 1}")
        assert_names_the_flag_and_package(info.value.details())

        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = "text"
        (status,) = model_service.GetModelStatus(status_request, timeout=30).model_version_status
    assert status.state == get_model_status_pb2.ModelVersionStatus.END
    assert status.status.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert_names_the_flag_and_package(status.status.error_message)
    # the models that were serving still do
    response = httpx.post(f"{library_server.rest_url}/v1/models/half_plus_two:predict", json={"instances": [1.0]})
    assert response.json() == {"predictions": [2.5]}
    response = httpx.post(
        f"{library_server.rest_url}/v1/models/words:predict", json={"instances": expected["sentences"]}, timeout=30
    )
    assert response.json() == {"predictions": expected["words"]["tokens"]}


# --- Keras 3 and tf_keras exports ------------------------------------------------------------------------------


def signature(server: ServerProcess, model: str, name: str = "serving_default") -> Any:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = model
    request.metadata_field.append("signature_def")
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    return signatures.signature_def[name]


@pytest.mark.parametrize(
    ("model", "input_name", "output_name"),
    [("keras3", "features", "output_0"), ("tf_keras", "x", "scores"), ("tf_keras_saved_model", "x", "scores")],
)
def test_keras_exports_serve_like_the_in_process_model(
    served: ServerProcess, exported: tuple[Path, dict[str, Any]], model: str, input_name: str, output_name: str
) -> None:
    _, expected = exported
    want = np.array(expected[model.removesuffix("_saved_model")][output_name], np.float32)
    features = np.array(expected["features"], np.float32)

    outputs = predict_grpc(served, model, {input_name: tf.constant(features)})
    np.testing.assert_allclose(outputs[output_name], want, rtol=1e-6)
    response = httpx.post(
        f"{served.rest_url}/v1/models/{model}:predict", json={"instances": expected["features"]}, timeout=30
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(np.array(response.json()["predictions"], np.float32), want, rtol=1e-6)

    serving_default = signature(served, model)
    assert serving_default.method_name == "tensorflow/serving/predict"
    assert list(serving_default.inputs) == [input_name]
    assert list(serving_default.outputs) == [output_name]
    tensor = serving_default.inputs[input_name]
    assert tensor.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in tensor.tensor_shape.dim] == [-1, 3]
    assert [d.size for d in serving_default.outputs[output_name].tensor_shape.dim] == [-1, 2]
    if model == "keras3":  # model.export also writes the endpoint under its own name
        assert signature(served, model, "serve").inputs[input_name].dtype == tf.float32.as_datatype_enum
