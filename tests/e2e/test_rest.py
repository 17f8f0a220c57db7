"""Plain HTTP clients against a real server: TF Serving's REST API, its formats, codes and error texts."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.server import Server
from tests.paths import testdata

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def http(multi_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=multi_server.rest_url, timeout=30) as client:
        yield client


def test_predict_row_format(http: httpx.Client) -> None:
    r = http.post("/v1/models/half_plus_two:predict", content=b'{"instances": [1.0, 2.0, 5.0]}')
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"predictions": [2.5, 3.0, 4.5]}
    assert "3.0" in r.text  # floats keep their decimal point, as TF Serving writes them


def test_predict_columnar_format(http: httpx.Client) -> None:
    r = http.post("/v1/models/half_plus_two:predict", json={"inputs": {"x": [[1.0], [2.0]]}})
    assert r.status_code == 200
    assert r.json() == {"outputs": [[2.5], [3.0]]}


def test_predict_by_version_and_signature(http: httpx.Client) -> None:
    body = {"signature_name": "serving_default", "instances": [[2.0]]}
    assert http.post("/v1/models/half_plus_three/versions/123:predict", json=body).json() == {
        "predictions": [[4.0]]
    }


def test_gzip_request_body(http: httpx.Client) -> None:
    body = gzip.compress(b'{"instances": [2.0, 3.0, 4.0]}')
    r = http.post("/v1/models/half_plus_two:predict", content=body, headers={"Content-Encoding": "gzip"})
    assert r.json() == {"predictions": [3.0, 3.5, 4.0]}


def test_model_status(http: httpx.Client) -> None:
    r = http.get("/v1/models/two_versions")
    assert r.status_code == 200
    assert r.json() == {
        "model_version_status": [
            {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            for v in ("124", "123")
        ]
    }
    only = http.get("/v1/models/two_versions/versions/123").json()
    assert [s["version"] for s in only["model_version_status"]] == ["123"]
    # a label is not resolved for status: every version is listed, as in TF Serving
    labelled = http.get("/v1/models/two_versions/labels/anything").json()
    assert len(labelled["model_version_status"]) == 2


def test_metadata_matches_tf_serving(default_server: Server) -> None:
    r = httpx.get(f"{default_server.rest_url}/v1/models/default/metadata", timeout=30)
    assert r.status_code == 200
    expected = json.loads(testdata("half_plus_two_model_metadata.json").read_text())
    assert r.json() == expected


def test_request_id_is_returned(http: httpx.Client) -> None:
    r = http.get("/v1/models/half_plus_two", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    # issue 11: an id the client did not send is only in the log line, not in the response
    assert "x-request-id" not in http.get("/v1/models/half_plus_two").headers


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("POST", "/v1/models/half:predict", b'{"instances": [1.0]}', 404,
         "Servable not found for request: Latest(half)"),
        ("POST", "/v1/models/half_plus_two/versions/9:predict", b'{"instances": [1.0]}', 404,
         "Servable not found for request: Specific(half_plus_two, 9)"),
        ("POST", "/v1/models/half_plus_two/labels/beta:predict", b'{"instances": [1.0]}', 400,
         "Unrecognized servable version label: beta"),
        ("POST", "/v1/models/half_plus_two:predict", b"", 400, "JSON Parse error: The document is empty"),
        ("POST", "/v1/models/half_plus_two:predict", b"{nope", 400, "JSON Parse error:"),
        ("POST", "/v1/models/half_plus_two:predict", b'{"x": 1}', 400, "Missing 'inputs' or 'instances' key"),
        ("POST", "/v1/models/half_plus_two:predict", b'{"instances": ["a"]}', 400,
         "is not of expected type: float"),
        ("POST", "/v1/models/half_plus_two:predict", b'{"signature_name": "nope", "instances": [1.0]}', 400,
         'Serving signature name: "nope" not found in signature def'),
        ("POST", "/v1/models/half_plus_two:PREDICT", b'{"instances": [1.0]}', 400,
         "Malformed request: POST /v1/models/half_plus_two:PREDICT"),
        ("GET", "/v1/models", b"", 400, "Missing model name in request."),
        ("GET", "/v1/models/nope", b"", 404, "Could not find any versions of model nope"),
        ("GET", "/v1/models/half_plus_two/versions/5", b"", 404,
         "Could not find version 5 of model half_plus_two"),
        ("GET", "/v1/models/half_plus_two/versions/99999999999999999999", b"", 400,
         "Failed to convert version: 99999999999999999999 to numeric."),
        ("GET", "/v1/models/nope/metadata", b"", 404, "Servable not found for request: Latest(nope)"),
        # names and labels are looked up, never joined to a path: nothing escapes the base paths
        ("GET", "/v1/models/..%2F..%2Fetc%2Fpasswd", b"", 404, "Could not find any versions of model ../../etc/passwd"),
        ("POST", "/v1/models/half_plus_two/labels/..%2F..:predict", b'{"instances": [1.0]}', 400,
         "Unrecognized servable version label: ../.."),
        ("DELETE", "/v1/models/half_plus_two", b"", 400, "Malformed request: DELETE /v1/models/half_plus_two"),
    ],
)
def test_errors(http: httpx.Client, method: str, path: str, body: bytes, status: int, error: str) -> None:
    r = http.request(method, path, content=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert error in r.json()["error"]


def test_non_v1_path_is_a_plain_404(http: httpx.Client) -> None:
    assert http.get("/v3/models/half_plus_two").status_code == 404  # /v2 is the Open Inference Protocol (issue 12)


def test_cors_preflight_without_origin_is_400_with_an_empty_body(http: httpx.Client) -> None:
    r = http.options("/v1/models/half_plus_two")  # TF Serving: FailedPrecondition, no JSON body (issue 10)
    assert r.status_code == 400
    assert r.content == b""


def test_cors_preflight_with_origin(http: httpx.Client) -> None:
    r = http.options("/v1/models/half_plus_two:predict", headers={"Origin": "https://example.com"})
    assert r.status_code == 200
    assert r.content == b""


def test_probes(http: httpx.Client) -> None:
    assert http.get("/livez").status_code == 200
    r = http.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready"}


def test_http2_prior_knowledge(multi_server: Server) -> None:
    with httpx.Client(base_url=multi_server.rest_url, http1=False, http2=True, timeout=30) as client:
        r = client.post("/v1/models/half_plus_two:predict", json={"instances": [1.0]})
        assert r.http_version == "HTTP/2"
        assert r.json() == {"predictions": [2.5]}


@pytest.mark.parametrize(
    ("directory", "expected"),
    [
        ("saved_model_half_plus_two_2_versions", "saved_model_half_plus_two_2_versions_metadata.json"),
        # (saved_model_half_plus_two_tf2_2_versions_metadata.json describes a TF2 export that is not in the test
        # data: saved_model_half_plus_two_tf2_cpu records `defaults` for its inputs, that export did not.)
    ],
)
def test_versioned_metadata_matches_tf_serving(tmp_path_factory: pytest.TempPathFactory, directory: str,
                                               expected: str) -> None:
    """TF Serving's expected documents for GET .../versions/123/metadata, model named as in its tests."""
    from tests.e2e.conftest import write_config

    name = "saved_model_half_plus_two_2_versions"
    config = write_config(tmp_path_factory.mktemp("meta") / "models.config", {name: directory},
                          {name: "    model_version_policy { all {} }\n"})
    with Server([f"--model_config_file={config}"]) as server:
        r = httpx.get(f"{server.rest_url}/v1/models/{name}/versions/123/metadata", timeout=30)
    assert r.status_code == 200
    assert r.json() == json.loads(testdata(expected).read_text())


def test_h2c_upgrade(multi_server: Server) -> None:
    """HTTP/1.1 `Upgrade: h2c` on the same port switches to HTTP/2 (RFC 7540 section 3.2) and answers on
    stream 1."""
    import socket

    import h2.connection
    import h2.events

    client = h2.connection.H2Connection()
    settings = client.initiate_upgrade_connection()
    assert settings is not None  # a client's upgrade has settings
    with socket.create_connection(("127.0.0.1", multi_server.rest_port), timeout=10) as sock:
        sock.sendall(
            b"GET /v1/models/half_plus_two HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n"
        )
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        head, rest = buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 ")
        sock.sendall(client.data_to_send())
        body, status, done = b"", None, False
        data = rest
        while not done:
            for event in client.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    done = True
            sock.sendall(client.data_to_send())
            if not done:
                data = sock.recv(65536)
    assert status == b"200"
    assert json.loads(body)["model_version_status"][0]["state"] == "AVAILABLE"
