"""The style gates of ../shared/STYLE.md run with the tests: ruff over the code and tests, mypy --strict
over the package, the client and the tests (as `make lint`)."""

from __future__ import annotations

import subprocess
import sys

from tests.paths import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, check=False)


def test_ruff() -> None:
    result = run("ruff", "check", "svc", "tests", "bench", "examples", "proto", "clients/python")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run("mypy", "svc", "tests", "clients/python/aspired_client")
    assert result.returncode == 0, result.stdout + result.stderr
