"""Issue 15: `--frontend_workers=2`: frontend processes around one model owner. Supervision (a killed
frontend loses only its in-flight calls and comes back; a killed owner takes the server down non-zero),
one model copy (no TensorFlow in the frontends), snapshots, merged metrics, one log stream with `worker`."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.e2e.server import ServerProcess
from tests.paths import testdata

pytestmark = pytest.mark.e2e

HALF_PLUS_TWO = testdata("saved_model_half_plus_two_cpu")


def predict_request(name: str = "m") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0])
    tensor.tensor_shape.CopyFrom(
        tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=2),
                                               tensor_shape_pb2.TensorShapeProto.Dim(size=1)])
    )
    request.inputs["x"].CopyFrom(tensor)
    return request


def frontend_pids(server: ServerProcess) -> dict[int, int]:
    """index -> pid of the frontends started most recently."""
    pids: dict[int, int] = {}
    for event in server.log_events():
        if event.get("event") == "frontend_worker_started":
            pids[int(str(event["index"]))] = int(str(event["pid"]))
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not status.exists() or status.read_text().split()[2] != "Z"


def wait_for(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise TimeoutError(f"condition not met within {timeout}s")


@pytest.fixture
def workers_server(tmp_path: Path) -> Iterator[ServerProcess]:
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    server = ServerProcess([
        "--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", "--frontend_workers=2", "--enable_batching",
        f"--monitoring_config_file={monitoring}",
    ])
    with server:
        yield server


def test_two_frontends_serve_one_model_copy(workers_server: ServerProcess) -> None:
    server = workers_server
    pids = frontend_pids(server)
    assert sorted(pids) == [0, 1]
    for pid in pids.values():  # the frontends never load TensorFlow's runtime
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "libtensorflow" not in maps
        assert "_pywrap_tensorflow" not in maps
    assert server.proc is not None
    assert "libtensorflow" in Path(f"/proc/{server.proc.pid}/maps").read_text()

    requests = 12
    for _ in range(requests):  # a new connection each time: the kernel spreads them over both frontends
        r = httpx.post(f"{server.rest_url}/v1/models/m:predict", json={"instances": [[1.0], [2.0]]}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [[2.5], [3.0]]}
        with grpc.insecure_channel(server.grpc_target) as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                predict_request(), timeout=10)
            assert list(response.outputs["y"].float_val) == [2.5, 3.0]
            assert response.model_spec.version.value == 123
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "m"}), timeout=10)
            assert [s.state for s in status.model_version_status] == [30]
    assert httpx.get(f"{server.rest_url}/readyz", timeout=10).status_code == 200

    # One Prometheus page for the server: the frontends' request counts and the owner's batches, summed.
    page = httpx.get(f"{server.rest_url}/metrics", timeout=10).text
    assert f':tensorflow:serving:request_count{{model_name="m",status="OK"}} {2 * requests}' in page  # both APIs
    assert 'aspired_batch_size_count{model="m",version="123"} ' in page
    batches = next(line for line in page.splitlines() if line.startswith("aspired_batch_size_count{"))
    assert float(batches.split()[-1]) >= 2 * requests
    # TensorFlow's own registry lives in the owner, and joins the same page (issue 10)
    wait_for(lambda: ":tensorflow:core:direct_session_runs{}" in httpx.get(
        f"{server.rest_url}/metrics", timeout=10).text, timeout=120)

    finished = [e for e in server.log_events() if e.get("event") == "request_finished"]
    assert {e["worker"] for e in finished} <= {"frontend-0", "frontend-1"}
    assert len({e["worker"] for e in finished}) == 2
    assert all(e.get("worker") for e in server.log_events())


def test_a_killed_frontend_fails_only_its_calls_and_comes_back(workers_server: ServerProcess) -> None:
    server = workers_server
    victim = frontend_pids(server)[0]
    stop = threading.Event()
    ok: list[int] = []
    failed: list[str] = []

    def load() -> None:
        while not stop.is_set():
            with httpx.Client(base_url=server.rest_url, timeout=10) as client:  # reconnects after a failure
                try:
                    while not stop.is_set():
                        r = client.post("/v1/models/m:predict", json={"instances": [[1.0]]})
                        assert r.status_code == 200, r.text
                        ok.append(1)
                except httpx.HTTPError as exc:
                    failed.append(repr(exc))

    clients = 6
    threads = [threading.Thread(target=load) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(ok) > 50)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: frontend_pids(server)[0] != victim)  # restarted by the owner
        restarted = frontend_pids(server)[0]
        wait_for(lambda: httpx.get(f"{server.rest_url}/readyz", timeout=10).status_code == 200)
        before = len(ok)
        wait_for(lambda: len(ok) > before + 50)  # the port kept answering throughout and still does
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    # Each client had at most one call in flight: only calls on connections of the killed process failed.
    assert len(failed) <= clients, failed
    assert alive(restarted)
    assert server.proc is not None
    assert server.proc.poll() is None
    exits = [e for e in server.log_events() if e.get("event") == "frontend_worker_exited"]
    assert [(e["index"], e["pid"]) for e in exits] == [(0, victim)]
    for _ in range(20):  # every new connection is served again, whichever frontend takes it
        assert httpx.post(f"{server.rest_url}/v1/models/m:predict", json={"instances": [[1.0]]},
                          timeout=10).status_code == 200


def test_a_killed_owner_ends_the_server_non_zero(workers_server: ServerProcess) -> None:
    server = workers_server
    frontends = list(frontend_pids(server).values())
    assert server.proc is not None
    server.proc.kill()
    assert server.proc.wait(30) != 0
    wait_for(lambda: not any(alive(pid) for pid in frontends))  # the frontends follow their owner
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.rest_url}/livez", timeout=5)


def test_sigterm_drains_every_frontend_then_the_owner(workers_server: ServerProcess) -> None:
    server = workers_server
    frontends = list(frontend_pids(server).values())
    assert server.proc is not None
    assert httpx.post(f"{server.rest_url}/v1/models/m:predict", json={"instances": [[1.0]]},
                      timeout=10).status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0
    assert not any(alive(pid) for pid in frontends)
    events = server.log_events()
    stopped = [e for e in events if e.get("event") == "frontend_worker_stopped"]
    assert sorted((e["index"], e["returncode"]) for e in stopped) == [(0, 0), (1, 0)]
    order = [e["event"] for e in events if e.get("worker") == "owner"]
    assert order.index("frontend_worker_stopped") < order.index("server_stopped")


def test_a_reload_is_visible_to_the_frontend_that_asked(tmp_path: Path) -> None:
    """ReloadConfig through a frontend: answered once the owner loaded the model, and that frontend
    already resolves it (the owner publishes its snapshot before the answer)."""
    server = ServerProcess(["--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", "--frontend_workers=2"])
    with server, grpc.insecure_channel(server.grpc_target) as channel:
        from tensorflow_serving.apis import model_management_pb2

        request = model_management_pb2.ReloadConfigRequest()
        config = request.config.model_config_list.config.add()
        config.name, config.base_path, config.model_platform = "n", str(HALF_PLUS_TWO), "tensorflow"
        response = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=60)
        assert response.status.error_code == 0
        result = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            predict_request("n"), timeout=10)
        assert list(result.outputs["y"].float_val) == [2.5, 3.0]
        assert np.array(result.outputs["y"].float_val).shape == (2,)


def test_workers_accept_from_sockets_handed_to_the_server() -> None:
    """`serve(..., sockets=)` with workers: every frontend accepts from the listening sockets the caller
    bound (no port chosen, released and bound again), instead of binding the ports with SO_REUSEPORT."""
    import subprocess
    import sys

    from tests.e2e.launch import LISTENERS_VARIABLE
    from tests.e2e.server import listening_socket, port_of
    from tests.paths import REPO

    grpc_sock, rest_sock = listening_socket(), listening_socket()
    grpc_port, rest_port = port_of(grpc_sock), port_of(rest_sock)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", LISTENERS_VARIABLE: f"{grpc_sock.fileno()},{rest_sock.fileno()}"}
    argv = [sys.executable, "-m", "tests.e2e.launch", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
            "--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", "--frontend_workers=2"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, pass_fds=[grpc_sock.fileno(), rest_sock.fileno()],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    grpc_sock.close()
    rest_sock.close()
    try:
        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"http://127.0.0.1:{rest_port}/readyz", timeout=5).status_code == 200
            return False

        wait_for(ready, timeout=120)
        for _ in range(8):
            r = httpx.post(f"http://127.0.0.1:{rest_port}/v1/models/m:predict", json={"instances": [[1.0]]},
                           timeout=10)
            assert r.json() == {"predictions": [[2.5]]}
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                    predict_request(), timeout=10)
                assert list(response.outputs["y"].float_val) == [2.5, 3.0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
