"""The style gates of ../shared/STYLE.md run with the tests: ruff over the code and tests, mypy --strict
over the package, the client and the tests (as `make lint`), the import-linter layers of pyproject.toml, and
TensorFlow imported only by svc/servables."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, check=False)


def test_ruff() -> None:
    result = run("ruff", "check", "svc", "tests", "bench", "examples", "proto", "clients/python")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run("mypy", "svc", "tests", "clients/python/aspired_client")
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_layers() -> None:
    # issue 9: frontends -> inference -> {batching, servables, wire} -> {lifecycle, sources} -> base modules
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports)], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _tensorflow_imports(path: Path) -> list[str]:
    """The TensorFlow modules a file imports, other than TF's generated protobuf modules (`*_pb2`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = node.module
            names = [module if module.endswith("_pb2") else f"{module}.{alias.name}" for alias in node.names]
        found += [n for n in names if n.split(".")[0] == "tensorflow" and not n.endswith("_pb2")]
    return found


def test_only_servables_import_tensorflow() -> None:
    # issue 9: svc/servables is the TensorFlow boundary; elsewhere only TF's generated protobuf classes
    package = REPO / "svc"
    offenders = {
        str(path.relative_to(REPO)): names
        for path in sorted(package.rglob("*.py"))
        if path.parent != package / "servables" and "_proto" not in path.parts
        if (names := _tensorflow_imports(path))
    }
    assert offenders == {}
