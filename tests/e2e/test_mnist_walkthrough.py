"""The seed's walkthrough: train and export v1, serve it, copy a better v2 in while the client runs; the
error rate drops and no request fails."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.server import Server
from tests.paths import REPO

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(REPO / "examples"))


def export(base: Path, version: int, iterations: int) -> Path:
    """The tutorial's export step (`examples/mnist_saved_model.py`), called in this process."""
    import mnist_saved_model  # type: ignore[import-not-found]  # examples/, put on sys.path above

    return Path(mnist_saved_model.export(str(base), version, iterations))


def test_walkthrough(tmp_path: Path) -> None:
    import mnist_client  # type: ignore[import-not-found]

    served = tmp_path / "models" / "mnist"
    export(served, 1, iterations=3)
    better = export(tmp_path / "staging", 2, iterations=400)
    server = Server(["--model_name=mnist", f"--model_base_path={served}"])
    with server:
        before = mnist_client.run(server.grpc_target, "mnist", num_tests=300, concurrency=10)
        assert before["failed"] == 0
        during: dict[str, float] = {}
        client = threading.Thread(
            target=lambda: during.update(mnist_client.run(server.grpc_target, "mnist", 3000, 10))
        )
        client.start()
        time.sleep(0.5)  # the client is under way (if it finished first, the checks below still hold)
        shutil.copytree(better, served / "2")
        server.wait_for_states("mnist", {2: "AVAILABLE", 1: "END"})
        client.join(120)
        after = mnist_client.run(server.grpc_target, "mnist", num_tests=300, concurrency=10)
    assert during["failed"] == 0
    assert during["answered"] == 3000
    assert after["version_2"] == 300
    assert after["error_rate"] < before["error_rate"]
    assert after["error_rate"] < 0.15
