"""A real aspired server in a subprocess on loopback, for e2e tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import httpx

from tests.paths import REPO

WORKERS_ENV = "ASPIRED_E2E_FRONTEND_WORKERS"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`python -m svc` with the given flags; `grpc_port`/`rest_port` are chosen free ports."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None, rest: bool = True) -> None:
        self.grpc_port = free_port()
        self.rest_port = free_port() if rest else 0
        flags = [f"--port={self.grpc_port}"]
        if rest:
            flags.append(f"--rest_api_port={self.rest_port}")
        workers = os.environ.get(WORKERS_ENV)  # issue 15: the e2e tier once more with frontend worker processes
        if workers and not any(a.startswith("--frontend_workers") for a in args):
            flags.append(f"--frontend_workers={workers}")
        self.args = [sys.executable, "-m", "svc", *flags, *args]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def start(self, timeout: float = 90.0) -> Self:
        self.proc = subprocess.Popen(
            self.args, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.wait_for_line("Running gRPC ModelServer at", timeout)
            if self.rest_port:
                self.wait_for_line("Exporting HTTP/REST API at", timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc is not None and self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader drain
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        raise TimeoutError(f"no line containing {text!r} within {timeout}s:\n{self.output()}")

    def log_events(self) -> list[dict[str, object]]:
        events = []
        for line in self.lines:
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return events

    def wait_for_version_state(self, model: str, version: int, state: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            r = httpx.get(f"{self.rest_url}/v1/models/{model}", timeout=5)
            if r.status_code == 200:
                last = r.json()
                for status in last["model_version_status"]:
                    if status["version"] == str(version) and status["state"] == state:
                        return
            time.sleep(0.1)
        raise TimeoutError(f"{model}/{version} never reached {state}; last status {last}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def model_path(path: Path) -> str:
    return str(path.resolve())
