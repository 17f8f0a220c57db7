"""aspired-client in a venv of its own, without TensorFlow (issue 14): every method over gRPC and REST,
sync and asyncio, against a real server, with TF Serving's errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.client.conftest import client_config, run_drive
from tests.e2e.server import Server

pytestmark = pytest.mark.e2e

Y = {"dtype": "float32", "shape": [3, 1], "value": [2.5, 3.0, 4.5]}


def test_the_venv_has_no_tensorflow(client_python: Path) -> None:
    assert run_drive(client_python, "environment") == {
        "tensorflow": False,
        "tensorflow_serving": False,
        "grpc": True,
        "httpx": True,
        "numpy": True,
    }


def error(code: str, message: str, http_status: int | None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "http_status": http_status}}


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_every_method(client_python: Path, client_server: Server, protocol: str) -> None:
    rest = protocol == "rest"
    target = client_server.rest_url if rest else client_server.grpc_target
    results = run_drive(client_python, "api", target)

    def http(status: int) -> int | None:
        return status if rest else None

    for key in ("predict", "predict_version_123", "predict_version_124", "predict_label_stable",
                "predict_label_canary", "predict_outputs"):  # fmt: skip
        assert results[key] == {"ok": {"y": Y}}, key
    assert results["predict_signature"] == {
        "ok": {"outputs": {"dtype": "float32", "shape": [3, 1], "value": [3.5, 4.0, 5.5]}}
    }
    assert results["classify"] == {"ok": [[["", 2.5]], [["", 3.0]]]}
    assert results["classify_context"] == {"ok": [[["", 4.0]]]}
    assert results["regress"] == {"ok": [3.5, 4.0]}
    assert results["regress_version"] == {"ok": [2.5]}

    metadata = results["metadata"]["ok"]
    assert (metadata["name"], metadata["version"]) == ("half_plus_two", 123)
    assert metadata["signatures"]["serving_default"] == {
        "method_name": "tensorflow/serving/predict",
        "inputs": {"x": {"name": "x:0", "dtype": "DT_FLOAT", "shape": [-1, 1]}},
        "outputs": {"y": {"name": "y:0", "dtype": "DT_FLOAT", "shape": [-1, 1]}},
    }
    assert metadata["signatures"]["classify_x_to_y"]["inputs"]["inputs"]["shape"] is None  # unknown rank
    assert results["metadata_version"]["ok"]["version"] == 123
    assert results["metadata_label"]["ok"]["version"] == 124
    ok = {"error_code": "OK", "error_message": ""}
    assert results["status"] == {
        "ok": [{"version": 124, "state": "AVAILABLE", **ok}, {"version": 123, "state": "AVAILABLE", **ok}]
    }
    assert results["status_version"] == {"ok": [{"version": 124, "state": "AVAILABLE", **ok}]}
    assert results["health"] == {"ok": True}
    assert results["health_model"] == {"ok": True}

    not_found = "Servable not found for request: "
    assert results["error_model"] == error("NOT_FOUND", not_found + "Latest(no_such_model)", http(404))
    assert results["error_version"] == error("NOT_FOUND", not_found + "Specific(two_versions, 7)", http(404))
    assert results["error_label"] == error(
        "INVALID_ARGUMENT", "Unrecognized servable version label: nope", http(400)
    )
    if rest:
        assert results["error_signature"] == error(
            "INVALID_ARGUMENT", 'Serving signature name: "nope" not found in signature def', 400
        )
        assert results["error_input"] == error(
            "INVALID_ARGUMENT", "Missing named input: x in 'inputs' object.", 400
        )
    else:
        assert results["error_signature"] == error(
            "FAILED_PRECONDITION", 'Serving signature key "nope" not found.', None
        )
        assert results["error_input"]["error"]["code"] == "INVALID_ARGUMENT"
        assert results["error_input"]["error"]["message"].startswith(
            "Signature input alias: x(feed name: x:0)"
        )
    # over REST the output filter is the client's (TF Serving's REST API has none), with gRPC's text
    assert results["error_output"] == error(
        "INVALID_ARGUMENT", "output tensor alias not found in signature: nope Outputs expected to be in the set {y}.",
        None,
    )  # fmt: skip
    assert results["error_status"] == error(
        "NOT_FOUND", "Could not find any versions of model no_such_model", http(404)
    )
    assert results["error_metadata"] == error("NOT_FOUND", not_found + "Latest(no_such_model)", http(404))
    assert results["error_regress"] == error(
        "INVALID_ARGUMENT", "No signature was found with the name: nope", http(400)
    )


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_async_client(client_python: Path, client_server: Server, protocol: str) -> None:
    target = client_server.rest_url if protocol == "rest" else client_server.grpc_target
    results = run_drive(client_python, "api_async", target)
    assert results[0] == {"ok": {"y": {"dtype": "float32", "shape": [2, 1], "value": [2.5, 3.0]}}}
    assert results[1] == results[0]
    assert results[2] == {"ok": [[["", 2.5]]]}
    assert results[3] == {"ok": [3.5]}
    assert results[4]["ok"]["version"] == 124
    assert [s["version"] for s in results[5]["ok"]] == [124, 123]
    assert results[6] == {"ok": True}
    assert results[7] == {
        "error": {"code": "NOT_FOUND", "message": "Servable not found for request: Latest(no_such_model)"}
    }


def test_unreachable_server_is_unavailable(client_python: Path, tmp_path: Path) -> None:
    from tests.e2e.server import free_port

    port = free_port()  # nothing listens there
    for target in (f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"):
        result = run_drive(client_python, "unreachable", target)
        assert result["code"] == "UNAVAILABLE", (target, result)


def test_reload_config(client_python: Path, tmp_path: Path) -> None:
    config = client_config(tmp_path / "models.config")
    with Server([f"--model_config_file={config}", "--file_system_poll_wait_seconds=0"]) as server:
        smaller = client_config(
            tmp_path / "smaller.config", {"half_plus_two": "saved_model_half_plus_two_cpu"}
        )
        results = run_drive(client_python, "reload", server.grpc_target, server.rest_url, smaller.read_text())
    assert results["reload"] == {"ok": None}
    assert [s["state"] for s in results["half_plus_three"]["ok"]] == ["END"]
    assert results["bad_reload"]["error"]["code"] == "INVALID_ARGUMENT"
    assert results["rest_reload"]["error"]["code"] == "UNIMPLEMENTED"
