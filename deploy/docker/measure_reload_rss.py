"""Measure the server's resident memory across repeated version reloads, with and without jemalloc.

The question deploy/README.md answers with it: does `LD_PRELOAD=libjemalloc.so.2` (Debian's libjemalloc2, which
the image installs) keep RSS flatter than glibc malloc when versions are loaded and unloaded many times? Each
run starts `python -m svc` on loopback with one model, then publishes version 2, 3, ... (a copy of the same
SavedModel, staged and renamed into place), waits until the new version is AVAILABLE and the old one has ended,
and samples VmRSS of the server process after every swap.

    python deploy/docker/measure_reload_rss.py --saved_model=DIR [--reloads=30] [--jemalloc=PATH]

Prints one JSON line per run and a summary; nothing is written outside a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def model_status(port: int, model: str) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/{model}", timeout=5) as response:
        body = json.load(response)
    return {status["version"]: status["state"] for status in body["model_version_status"]}


def wait_swapped(port: int, model: str, version: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = model_status(port, model)
        old = [state for name, state in states.items() if int(name) != version]
        if states.get(str(version)) == "AVAILABLE" and all(state == "END" for state in old):
            return
        time.sleep(0.05)
    raise TimeoutError(f"version {version} did not replace the previous one: {states}")


def publish(saved_model: Path, base: Path, version: int) -> None:
    staging = base / f".staging-{version}"
    shutil.copytree(saved_model, staging)
    staging.rename(base / str(version))


def run(saved_model: Path, reloads: int, preload: str | None) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "m"
        base.mkdir()
        publish(saved_model, base, 1)
        grpc_port, rest_port = free_port(), free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if preload:
            env["LD_PRELOAD"] = preload
        args = [
            sys.executable, "-m", "svc", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
            "--model_name=m", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
        ]  # fmt: skip
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 120
            while not any("Exporting HTTP/REST API at" in line for line in lines):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start:\n" + "".join(lines))
                time.sleep(0.1)
            samples = [rss_kib(proc.pid)]
            for version in range(2, reloads + 2):
                publish(saved_model, base, version)
                try:
                    wait_swapped(rest_port, "m", version)
                except OSError as error:
                    tail = "".join(lines[-40:])
                    raise RuntimeError(f"server gone at version {version} ({proc.poll()}):\n{tail}") from error
                shutil.rmtree(base / str(version - 1))
                samples.append(rss_kib(proc.pid))
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {
        "allocator": "jemalloc" if preload else "glibc",
        "reloads": reloads,
        "rss_mib_after_start": round(samples[0] / 1024, 1),
        "rss_mib_after_first_reload": round(samples[1] / 1024, 1),
        "rss_mib_after_last_reload": round(samples[-1] / 1024, 1),
        "rss_mib_max": round(max(samples) / 1024, 1),
        "growth_mib_first_to_last_reload": round((samples[-1] - samples[1]) / 1024, 1),
        "samples_kib": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saved_model", type=Path, required=True, help="a SavedModel directory (one version)")
    parser.add_argument("--reloads", type=int, default=30)
    parser.add_argument("--jemalloc", default="/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    options = parser.parse_args()
    if not Path(options.jemalloc).exists():
        raise SystemExit(f"{options.jemalloc} not found (apt-get install libjemalloc2)")
    for preload in (None, options.jemalloc):
        result = run(options.saved_model.resolve(), options.reloads, preload)
        print(json.dumps(result), flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
