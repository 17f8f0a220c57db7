"""Operations against real servers: drain on SIGTERM under load, gRPC health tracking readiness,
Prometheus metrics, JSON request logs, request limits, TLS and mutual TLS. In-process servers except where
a process is the point (the SIGTERM drain, the console log format of the process's logging)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import signal
import ssl
import tempfile
import threading
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.e2e.server import Server, ServerProcess
from tests.paths import testdata
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

HALF_PLUS_TWO = str(testdata("saved_model_half_plus_two_cpu"))


def predict_request(value: float = 1.0) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[value]], np.float32)))
    return request


async def health_status(target: str, service: str) -> int:
    from grpclib.client import Channel
    from grpclib.health.v1.health_grpc import HealthStub
    from grpclib.health.v1.health_pb2 import HealthCheckRequest

    host, port = target.rsplit(":", 1)
    channel = Channel(host, int(port))
    try:
        response = await HealthStub(channel).Check(HealthCheckRequest(service=service), timeout=5)
        return int(response.status)
    finally:
        channel.close()


SERVING, NOT_SERVING = 1, 2


def test_drain_on_sigterm_under_load() -> None:
    """SIGTERM: readiness fails at once while requests keep being served for the drain delay; load
    balancers (here: the clients watching /readyz) stop sending; no in-flight request fails; exit 0.
    The process logs with --log_format=console (a process's choice: in-process servers log JSON)."""
    server = ServerProcess(
        ["--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", "--drain_delay_seconds=4",
         "--shutdown_grace_seconds=30", "--log_format=console"]
    ).start()
    try:
        line = server.wait_for_line("Running gRPC ModelServer at")
        assert not line.startswith("{")
        assert "grpc_server_started" in line
        for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
            assert asyncio.run(health_status(server.grpc_target, service)) == SERVING
        stop = threading.Event()
        results: dict[str, list[str]] = {"grpc_ok": [], "grpc_failed": [], "rest_ok": [], "rest_failed": []}

        def grpc_load() -> None:
            with grpc.insecure_channel(server.grpc_target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                while not stop.is_set():
                    try:
                        stub.Predict(predict_request(), timeout=10)
                        results["grpc_ok"].append("ok")
                    except grpc.RpcError as exc:
                        results["grpc_failed"].append(f"{exc.code()}: {exc.details()}")

        def rest_load() -> None:
            with httpx.Client(base_url=server.rest_url, timeout=10) as client:
                while not stop.is_set():
                    try:
                        r = client.post("/v1/models/m:predict", json={"instances": [[1.0]]})
                        (results["rest_ok"] if r.status_code == 200 else results["rest_failed"]).append(r.text)
                    except httpx.HTTPError as exc:
                        results["rest_failed"].append(repr(exc))

        def balancer() -> None:
            with httpx.Client(base_url=server.rest_url, timeout=5) as client:
                wait_until(lambda: client.get("/readyz").status_code != 200, 120, interval=0.05)
            stop.set()

        workers = [threading.Thread(target=f) for f in (grpc_load, grpc_load, rest_load, rest_load, balancer)]
        for w in workers:
            w.start()
        wait_until(lambda: all(len(results[k]) > 10 for k in ("grpc_ok", "rest_ok")), 60,
                   message=lambda: str({k: len(v) for k, v in results.items()}))
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for_line("drain_started")
        # Readiness failed at once; the listeners stay open for the drain delay.
        assert asyncio.run(health_status(server.grpc_target, "")) == NOT_SERVING
        for w in workers:
            w.join(30)
        assert server.proc.wait(30) == 0
    finally:
        stop.set()
        server.stop()
    assert results["grpc_failed"] == []
    assert results["rest_failed"] == []
    assert len(results["grpc_ok"]) > 10
    assert len(results["rest_ok"]) > 10
    assert "drain_finished" in server.output()


def test_metrics_and_request_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value-1234")
    server = Server(
        ["--model_name=m", f"--model_base_path={HALF_PLUS_TWO}",
         f"--monitoring_config_file={testdata('monitoring_config.txt')}"],
    )
    with server, httpx.Client(base_url=server.rest_url, timeout=30) as http:
        for _ in range(3):
            assert http.post("/v1/models/m:predict", json={"instances": [1.0]}).status_code == 200
        assert http.post("/v1/models/nope:predict", json={"instances": [1.0]}).status_code == 404
        with grpc.insecure_channel(server.grpc_target) as channel:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                predict_request(), timeout=30, metadata=[("x-request-id", "grpc-req-1")]
            )
        r = http.get("/monitoring/prometheus/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        counts = {(s.labels["model_name"], s.labels["status"]): s.value
                  for s in families[":tensorflow:serving:request_count"].samples}
        assert counts[("m", "OK")] == 4  # 3 REST + 1 gRPC
        assert counts[("<unknown>", "NOT_FOUND")] == 1  # issue 10: no label value per unknown name
        assert ":tensorflow:serving:request_latency" in families
        assert ":tensorflow:cc:saved_model:load_attempt_count" in families
        per_version = [s for s in families["aspired_requests"].samples
                       if s.labels.get("version") == "123" and s.labels.get("code") == "OK"]
        assert sum(s.value for s in per_version) == 4
        states = {(s.labels["model"], s.labels["state"]): s.value for s in families["aspired_versions"].samples}
        assert states[("m", "AVAILABLE")] == 1
        assert "aspired_queue_depth" in families
        batch_sizes = [s for s in families["aspired_batch_size"].samples if s.name == "aspired_batch_size_count"]
        assert sum(s.value for s in batch_sizes if s.labels["version"] == "123") == 4
        bad = http.get("/monitoring/prometheus/metrics?x=1")
        assert bad.status_code == 400
        assert bad.text == "Unexpected path: /monitoring/prometheus/metrics?x=1. Should be /monitoring/prometheus/metrics"
    lines = [e for e in server.log_events() if e.get("event") == "request_finished"]
    predict_lines = [e for e in lines if e.get("api") in ("predict", "Predict") and e["status"] == "OK"]
    assert len(predict_lines) == 4
    for line in predict_lines:
        assert {"model", "version", "signature", "api", "status", "latency_ms", "batch_size", "request_id"} <= line.keys()
        assert line["model"] == "m"
        assert line["version"] == 123
        assert line["signature"] == "serving_default"
    assert any(e["request_id"] == "grpc-req-1" for e in lines)
    assert "very-secret-value-1234" not in server.output()


def test_request_size_limits() -> None:
    server = Server(["--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", "--max_request_bytes=2000"])
    with server:
        big = {"instances": [[1.0]] * 1000}
        r = httpx.post(f"{server.rest_url}/v1/models/m:predict", json=big, timeout=30)
        assert r.status_code == 413
        assert "larger than the limit" in r.json()["error"]
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_request()
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1000, 1), np.float32)))
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(request, timeout=30)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert stub.Predict(predict_request(), timeout=30).outputs["y"].float_val == [2.5]


def _certificates(directory: Path) -> dict[str, bytes]:
    """A CA, a server certificate for localhost/127.0.0.1, and a client certificate, made now."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    def cert(subject: str, k: ec.EllipticCurvePrivateKey, issuer_key: ec.EllipticCurvePrivateKey,
             issuer: str, ca: bool, san: list[x509.GeneralName]) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    import ipaddress

    ca_key, server_key, client_key = key(), key(), key()
    ca = cert("test-ca", ca_key, ca_key, "test-ca", True, [])
    server_cert = cert("localhost", server_key, ca_key, "test-ca", False,
                       [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client_cert = cert("client", client_key, ca_key, "test-ca", False, [])
    pem = serialization.Encoding.PEM
    out = {
        "ca": ca.public_bytes(pem), "server_cert": server_cert.public_bytes(pem), "server_key": pem_key(server_key),
        "client_cert": client_cert.public_bytes(pem), "client_key": pem_key(client_key),
    }
    for name, data in out.items():
        (directory / f"{name}.pem").write_bytes(data)
    return out


def _ssl_config(path: Path, certs: dict[str, bytes], client_verify: bool) -> Path:
    def text(b: bytes) -> str:
        return b.decode().replace("\n", "\\n")

    lines = [f'server_key: "{text(certs["server_key"])}"', f'server_cert: "{text(certs["server_cert"])}"']
    if client_verify:
        lines += [f'custom_ca: "{text(certs["ca"])}"', "client_verify: true"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _open_files(pid: int) -> list[str]:
    names = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            names.append(os.readlink(fd))
    return names


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_tls(tmp_path: Path, mutual: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    certs = _certificates(tmp_path)
    config = _ssl_config(tmp_path / "ssl.config", certs, mutual)
    scratch = tmp_path / "tmp"  # the server's temporary directory: key material must never appear there
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # what `tempfile` read from TMPDIR, in this process
    server = Server(["--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", f"--ssl_config_file={config}"])
    with server:
        client_key = certs["client_key"] if mutual else None
        client_cert = certs["client_cert"] if mutual else None
        credentials = grpc.ssl_channel_credentials(certs["ca"], client_key, client_cert)
        with grpc.secure_channel(f"localhost:{server.grpc_port}", credentials) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert stub.Predict(predict_request(), timeout=30).outputs["y"].float_val == [2.5]
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        if mutual:
            context.load_cert_chain(str(tmp_path / "client_cert.pem"), str(tmp_path / "client_key.pem"))
        r = httpx.post(f"https://localhost:{server.rest_port}/v1/models/m:predict", json={"instances": [1.0]},
                       verify=context, timeout=30)
        assert r.json() == {"predictions": [2.5]}
        if mutual:
            anonymous = grpc.ssl_channel_credentials(certs["ca"])
            with grpc.secure_channel(f"localhost:{server.grpc_port}", anonymous) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                with pytest.raises(grpc.RpcError) as info:
                    stub.Predict(predict_request(), timeout=10)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # Issue 10: every start wrote the private key to /tmp/aspired-*.pem (twice) and never removed it.
        assert list(scratch.iterdir()) == []
        assert not [f for f in _open_files(os.getpid()) if f.startswith("/") and "aspired-" in f]
    assert list(scratch.iterdir()) == []


def test_grpc_unix_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "aspired.sock"
    server = Server(["--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", f"--grpc_socket_path={socket_path}"])
    with server:
        server.wait_for_line(f"Running gRPC ModelServer at UNIX socket {socket_path}")
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert stub.Predict(predict_request(), timeout=30).outputs["y"].float_val == [2.5]


def test_cors_headers_when_enabled() -> None:
    server = Server(["--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", "--rest_api_enable_cors_support"])
    with server:
        r = httpx.post(f"{server.rest_url}/v1/models/m:predict", json={"instances": [1.0]}, timeout=30)
        assert r.headers["access-control-allow-origin"] == "*"
        assert r.headers["access-control-allow-methods"] == "POST, GET"
        assert r.headers["access-control-allow-headers"] == "Content-Type"
        error = httpx.get(f"{server.rest_url}/v1/models/nope", timeout=30)
        assert error.headers["access-control-allow-origin"] == "*"
        preflight = httpx.options(f"{server.rest_url}/v1/models/m:predict", headers={"Origin": "http://a.example"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "*"
