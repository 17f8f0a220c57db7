"""Fixtures of the client tests (issue 14): a venv holding only aspired-client, built from clients/python
with pip (offline from the configured package index), and servers for it to talk to."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import write_config
from tests.e2e.server import Server
from tests.paths import REPO

CLIENT_SOURCE = REPO / "clients" / "python"
VENV_CACHE = REPO / "build" / "client-venv"  # git-ignored; one venv per content of clients/python
DRIVE = Path(__file__).with_name("drive.py")

# `make test` installs the client (editable) beside the server. A venv made before the client existed
# (`pytest` run by hand) gets it from the source tree instead, for this process and the servers and
# `python -m svc` commands it starts; the TF-free venv of the tests always installs it for real.
if importlib.util.find_spec("aspired_client") is None:
    sys.path.insert(0, str(CLIENT_SOURCE))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CLIENT_SOURCE), os.environ.get("PYTHONPATH")]))

MODELS = {
    "half_plus_two": "saved_model_half_plus_two_cpu",
    "half_plus_three": "saved_model_half_plus_three",
    "two_versions": "saved_model_half_plus_two_2_versions",
}
TWO_VERSIONS = (
    "    model_version_policy { all {} }\n"
    '    version_labels { key: "stable" value: 123 }\n'
    '    version_labels { key: "canary" value: 124 }\n'
)


def _source_files() -> list[Path]:
    skip = {"__pycache__", "build", "dist"}
    return sorted(
        path
        for path in CLIENT_SOURCE.rglob("*")
        if path.is_file()
        and not skip & set(path.parts)
        and not any(p.endswith(".egg-info") for p in path.parts)
    )


def source_digest() -> str:
    digest = hashlib.sha256()
    for path in _source_files():
        digest.update(path.relative_to(CLIENT_SOURCE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_client_venv(venv: Path) -> Path:
    """`python -m venv` + `pip install <copy of clients/python>`; returns the venv's python."""
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    with tempfile.TemporaryDirectory(prefix="aspired-client-src-") as tmp:
        source = Path(tmp) / "python"
        shutil.copytree(
            CLIENT_SOURCE, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
        )
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"pip install of aspired-client failed:\n{result.stdout}\n{result.stderr}")
    (venv / ".complete").write_text("ok\n")
    return python


@pytest.fixture(scope="session")
def client_python() -> Path:
    """The python of a venv where only aspired-client (and its dependencies) is installed."""
    return build_client_venv(VENV_CACHE / source_digest())


def run_drive(python: Path, *args: str, timeout: float = 600) -> Any:
    result = subprocess.run(
        [str(python), str(DRIVE), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def client_config(path: Path, models: dict[str, str] = MODELS) -> Path:
    return write_config(path, models, {"two_versions": TWO_VERSIONS})


@pytest.fixture(scope="session")
def client_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """half_plus_two, half_plus_three and both versions of two_versions (labels stable=123, canary=124)."""
    config = client_config(tmp_path_factory.mktemp("client-config") / "models.config")
    with Server([f"--model_config_file={config}", "--file_system_poll_wait_seconds=0"]) as server:
        yield server
