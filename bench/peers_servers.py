"""The servers of bench/peers_bench.py: their venvs, their processes, their addresses and formats.

aspired runs from this tree with this venv's Python. KServe, MLServer and PyTriton each get a venv under
bench/out/peers/ made from the pinned bench/peers/requirements-NAME.txt with Debian's python3.11 (PyTriton's
bundled tritonserver and its Python backend stub need a system Python with a shared libpython; a pyenv build
fails there), and serve the same SavedModels through the small adapters in bench/peers/.

Every server starts in its own session (process group), so its CPU time is the sum over every process of that
group (tritonserver and its Python backend stubs, MLServer's inference workers) and stopping it ends them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from batching_bench import CPUS, OUT, PY, REPO, free_port

PEERS_DIR = REPO / "bench" / "peers"
VENVS = OUT / "peers"
TICK = os.sysconf("SC_CLK_TCK")
# Batching on, aspired: TF Serving's batching parameters (batch_bench's, with room for the 256-row requests).
ASPIRED_BATCHING = f"""max_batch_size {{ value: 512 }}
batch_timeout_micros {{ value: 0 }}
max_enqueued_batches {{ value: 1000 }}
num_batch_threads {{ value: {CPUS} }}
"""
MLSERVER_BATCH = {"max_batch_size": 128, "max_batch_time": 0.001}  # requests per batch, seconds of waiting
PEER_PYTHON_HINT = "apt-get install python3.11 python3.11-venv (or set PEER_PYTHON to a system Python 3.11)"


@dataclass(frozen=True)
class Kind:
    """One server configuration of the race."""

    server: str  # "aspired" | "KServe" | "MLServer" | "PyTriton"
    batching: bool
    workers: int = 1  # aspired's --frontend_workers

    @property
    def name(self) -> str:
        workers = f", {self.workers} frontend workers" if self.workers > 1 else ""
        return f"{self.server} ({'batching' if self.batching else 'no batching'}{workers})"

    @property
    def rest_format(self) -> str:
        return "instances" if self.server in ("aspired", "KServe") else "v2"

    @property
    def grpc_format(self) -> str:
        return "predict" if self.server == "aspired" else "v2"


def check_tools() -> list[str]:
    """What is missing on this machine for the race, each with its install hint."""
    missing = []
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            missing.append(f"`{tool}` not found: apt-get install {package}")
    return missing


def peer_python() -> str:
    """Debian's python3.11 (or $PEER_PYTHON), with the venv module; raises RuntimeError saying what is missing."""
    python = os.environ.get("PEER_PYTHON") or (
        "/usr/bin/python3.11" if Path("/usr/bin/python3.11").exists() else ""
    )
    if not python:
        raise RuntimeError(f"no system python3.11: {PEER_PYTHON_HINT}")
    done = subprocess.run([python, "-c", "import ensurepip, venv, sys; print(sys.version_info[:2])"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{python} cannot make venvs ({done.stderr.strip()[-200:]}): {PEER_PYTHON_HINT}")
    if done.stdout.strip() != "(3, 11)":
        raise RuntimeError(
            f"{python} is Python {done.stdout.strip()}, the pins are for 3.11: {PEER_PYTHON_HINT}"
        )
    return python


def ensure_venv(server: str) -> Path:
    """The peer's venv, made or refreshed from its pinned requirements; raises RuntimeError with the reason."""
    requirements = PEERS_DIR / f"requirements-{server.lower()}.txt"
    venv = VENVS / f"venv-{server.lower()}"
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_text() == requirements.read_text():
        return venv
    python = peer_python()
    print(f"making {venv} (pip install -r {requirements.relative_to(REPO)}; minutes)", flush=True)
    subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "-r", str(requirements)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"pip install -r {requirements.name} failed: {done.stderr.strip()[-600:]}")
    stamp.write_text(requirements.read_text())
    return venv


class Server:
    """One running server of a Kind, serving `models` (name -> SavedModel base path, version 1)."""

    def __init__(self, kind: Kind, models: dict[str, Path], venv: Path | None) -> None:
        self.kind = kind
        self.models = models
        self.rest_port, self.grpc_port, metrics_port = free_port(), free_port(), free_port()
        self.log = OUT / "logs" / f"peers_{kind.server}_{'on' if kind.batching else 'off'}_{kind.workers}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        versions = [f"{name}={path / '1'}" for name, path in models.items()]
        conf = OUT / "peers" / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(PEERS_DIR)}
        if kind.server == "aspired":
            config = "".join(
                f'  config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}\n'
                for name, path in models.items()
            )
            (conf / "models.config").write_text(f"model_config_list {{\n{config}}}\n")
            argv = [
                PY, "-m", "svc", f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
                f"--model_config_file={conf / 'models.config'}", "--file_system_poll_wait_seconds=0",
            ]  # fmt: skip
            if kind.batching:
                (conf / "batching.config").write_text(ASPIRED_BATCHING)
                argv += ["--enable_batching", f"--batching_parameters_file={conf / 'batching.config'}"]
            if kind.workers > 1:
                argv.append(f"--frontend_workers={kind.workers}")
            env["PYTHONPATH"] = str(REPO)
        elif kind.server == "KServe":
            assert venv is not None
            argv = [str(venv / "bin" / "python"), str(PEERS_DIR / "kserve_server.py"),
                    f"--http_port={self.rest_port}", f"--grpc_port={self.grpc_port}",
                    *(f"--model={v}" for v in versions)]  # fmt: skip
        elif kind.server == "MLServer":
            assert venv is not None
            repository = conf / f"mlserver-{'on' if kind.batching else 'off'}"
            shutil.rmtree(repository, ignore_errors=True)
            repository.mkdir(parents=True)
            settings = {
                "http_port": self.rest_port,
                "grpc_port": self.grpc_port,
                "metrics_port": metrics_port,
                "metrics_dir": str(repository / ".metrics"),
            }
            (repository / "settings.json").write_text(json.dumps(settings))
            for name, path in models.items():
                model = {"name": name, "implementation": "mlserver_runtime.SavedModel",
                         "parameters": {"uri": str(path / "1")}} | (MLSERVER_BATCH if kind.batching else {})  # fmt: skip
                (repository / name).mkdir()
                (repository / name / "model-settings.json").write_text(json.dumps(model))
            argv = [str(venv / "bin" / "mlserver"), "start", str(repository)]
        else:
            assert venv is not None
            argv = [str(venv / "bin" / "python"), str(PEERS_DIR / "pytriton_server.py"), str(self.rest_port),
                    str(self.grpc_port), str(metrics_port), "on" if kind.batching else "off", *versions]  # fmt: skip
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                argv, cwd=conf, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_ready(300)
        except BaseException:
            self.stop()
            raise

    def _ready(self, model: str) -> bool:
        base = f"http://127.0.0.1:{self.rest_port}"
        with contextlib.suppress(httpx.HTTPError):
            if self.kind.server == "aspired":
                return "AVAILABLE" in httpx.get(f"{base}/v1/models/{model}", timeout=5).text
            return httpx.get(f"{base}/v2/models/{model}/ready", timeout=5).status_code == 200
        return False

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(self.models)
        while waiting and time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind.name} exited: {self.log.read_text(errors='replace')[-1500:]}")
            waiting = [m for m in waiting if not self._ready(m)]
            if waiting:
                time.sleep(0.5)
        if waiting:
            raise RuntimeError(f"{self.kind.name}: {waiting} not ready after {timeout:g} s (log: {self.log})")

    def rest_url(self, model: str) -> str:
        if self.kind.rest_format == "instances":
            return f"http://127.0.0.1:{self.rest_port}/v1/models/{model}:predict"
        return f"http://127.0.0.1:{self.rest_port}/v2/models/{model}/infer"

    @property
    def grpc_path(self) -> str:
        if self.kind.grpc_format == "predict":
            return "/tensorflow.serving.PredictionService/Predict"
        return "/inference.GRPCInferenceService/ModelInfer"

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of every live process in the server's process group."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.process.pid:  # pgrp
                    total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / TICK

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)
        with contextlib.suppress(ProcessLookupError):  # stragglers of the group (MLServer can hang at exit)
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
