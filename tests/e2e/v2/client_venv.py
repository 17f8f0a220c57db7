"""A small venv WITHOUT TensorFlow for Triton's client library (`tritonclient[http,grpc]`), made on first use.

tritonclient[grpc] pins protobuf < 7 while the server's TensorFlow stack needs protobuf 7, so the clients run
in their own interpreter, as subprocesses, against the server on loopback. The venv lives in the git-ignored
`.venv-tritonclient/` of the repository and is rebuilt when `requirements.txt` changes. Creating it needs the
package index; when that fails the tests fail loudly (never skip).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.paths import REPO

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
VENV = REPO / ".venv-tritonclient"
CLIENT = HERE / "client.py"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv() -> Path:
    """The venv's interpreter, creating the venv when it is missing or stale. Raises RuntimeError."""
    stamp_text = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(REPO / ".venv-tritonclient.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two pytest processes never build it at once
        stamp = VENV / ".requirements-sha256"
        if stamp.exists() and stamp.read_text() == stamp_text and _python(VENV).exists():
            return _python(VENV)
        building = VENV.with_name(VENV.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        steps = [
            [base, "-m", "venv", str(building)],
            [str(_python(building)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-r", str(REQUIREMENTS)],
        ]
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True, check=False, timeout=900)
            if result.returncode != 0:
                raise RuntimeError(
                    f"could not create the tritonclient venv ({' '.join(step)} exited {result.returncode}):\n"
                    f"{result.stdout}\n{result.stderr}"
                )
        (building / ".requirements-sha256").write_text(stamp_text)
        shutil.rmtree(VENV, ignore_errors=True)
        building.rename(VENV)  # bin/python finds its venv by pyvenv.cfg; the pip script (unused) keeps the old path
        return _python(VENV)


def run_client(python: Path, command: str, *args: str, timeout: float = 120) -> Any:
    """Run `client.py COMMAND ARGS` in the tritonclient venv; its last stdout line is JSON."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(python), str(CLIENT), command, *args], capture_output=True, text=True, check=False, timeout=timeout,
        env=env,
    )
    if result.returncode != 0:
        raise AssertionError(f"client.py {command} {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])
