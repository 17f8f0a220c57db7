"""What the deploy tests share: the tools (kubectl's kustomize, hadolint, shellcheck, kubernetes-validate), the
Dockerfile read as instructions, the image entrypoint run with a stand-in server, and the flag check against the
real CLI parser. No container engine runs here, so every file of deploy/ is checked through these instead.

Every tool comes from the `dev` extra of pyproject.toml (wheels that carry the binaries); a missing one fails
the test that needs it, with the install command, rather than skipping it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from svc.cli import parse_command_line
from svc.config_files import parse_text_config
from svc.options import Options
from tests.e2e.server import ServerProcess
from tests.paths import REPO

DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.sh"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
# The Kubernetes version every manifest is validated against (kubernetes-validate ships its schemas offline).
KUBERNETES_VERSION = "1.37"

Manifest = dict[str, Any]


def tool(name: str) -> str:
    """The path of a command-line tool, from the venv running the tests first. Fails loudly when missing."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise AssertionError(
            f"{name} not found: install the dev extra (`pip install -e '.[dev]'`, `make test`)"
        )
    return found


def run_tool(args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    command = [tool(args[0]), *args[1:]]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=60, **kwargs)


# --- Kubernetes -------------------------------------------------------------------------------------------


@functools.cache
def _kustomize(directory: Path) -> str:
    result = run_tool(["kubectl", "kustomize", str(directory)])
    assert result.returncode == 0, f"kustomize {directory} failed:\n{result.stderr}"
    return result.stdout


def kustomize(directory: Path) -> list[Manifest]:
    """The objects `kubectl kustomize DIR` renders (a fresh copy each call: tests may mutate them)."""
    return [doc for doc in yaml.safe_load_all(_kustomize(directory)) if doc]


def objects(manifests: Sequence[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: Sequence[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [m for m in objects(manifests, kind) if name is None or m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def strict_crd_schema(schema: Any) -> Any:
    """A CRD's structural schema made strict like `kubectl apply --validate=strict`: an object that lists its
    properties rejects unknown ones, unless it preserves unknown fields."""
    if isinstance(schema, list):
        return [strict_crd_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict_crd_schema(value) for key, value in schema.items()}
    if (
        "properties" in result
        and "additionalProperties" not in result
        and not result.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The vendored openAPIV3Schema of a KServe kind (see schemas/README.md), made strict."""
    for path in SCHEMAS.glob("kserve-*.json"):
        document = json.loads(path.read_text())
        if document["kind"] == kind:
            schema: dict[str, Any] = strict_crd_schema(document["openAPIV3Schema"])
            return schema
    raise AssertionError(f"no vendored schema for {kind}")


# --- Dockerfile -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str  # upper case
    value: str  # continuation lines joined, comment lines inside it dropped

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form ENTRYPOINT/CMD/HEALTHCHECK CMD, else None."""
        text = self.value
        if self.keyword == "HEALTHCHECK":
            command = re.search(r"(?:^|\s)CMD\s+(.*)$", text)
            text = command.group(1) if command else ""
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, list) else None


def dockerfile(path: Path = DOCKERFILE) -> list[Instruction]:
    """The instructions of a Dockerfile, as the builder sees them (parser directives and comments dropped)."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        text = " ".join(part for part in pending if part)
        pending = []
        keyword, _, value = text.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), value.strip()))
    assert not pending, "Dockerfile ends inside a continuation"
    return instructions


def stages(instructions: Sequence[Instruction]) -> list[list[Instruction]]:
    """Instructions grouped by build stage (global ARGs before the first FROM are stage 0's prefix)."""
    result: list[list[Instruction]] = [[]]
    for instruction in instructions:
        if instruction.keyword == "FROM" and result[-1] and any(i.keyword == "FROM" for i in result[-1]):
            result.append([])
        result[-1].append(instruction)
    return result


def global_args(instructions: Sequence[Instruction]) -> dict[str, str]:
    args: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.value.partition("=")
            args[name] = default
    return args


def image_env(instructions: Sequence[Instruction] | None = None) -> dict[str, str]:
    """The ENV of the final stage: what the entrypoint sees in a container started without -e."""
    env: dict[str, str] = {}
    for instruction in stages(instructions or dockerfile())[-1]:
        if instruction.keyword == "ENV":
            for item in shlex.split(instruction.value):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def copied_to(destination: str, instructions: Sequence[Instruction] | None = None) -> Path:
    """The repository file the final stage COPYs to `destination`."""
    for instruction in stages(instructions or dockerfile())[-1]:
        if instruction.keyword == "COPY" and not instruction.value.startswith("--from"):
            source, target = instruction.value.split()
            if target == destination:
                return REPO / source
    raise AssertionError(f"the image has no COPY to {destination}")


def entrypoint_target(instructions: Sequence[Instruction] | None = None) -> str:
    """The image path of the project's entrypoint script in the exec-form ENTRYPOINT (after tini's `--`)."""
    (entrypoint,) = [i for i in stages(instructions or dockerfile())[-1] if i.keyword == "ENTRYPOINT"]
    argv = entrypoint.exec_form()
    assert argv is not None, "ENTRYPOINT must be exec form"
    return argv[-1]


# --- the entrypoint and the CLI ---------------------------------------------------------------------------

_FAKE_SERVER = '#!/bin/sh\nfor arg in "$@"; do printf "%s\\0" "$arg"; done\n'


def entrypoint_argv(env: Mapping[str, str], args: Sequence[str], tmp: Path) -> list[str]:
    """The command line the image's entrypoint execs (without the program name), for a container environment
    `env` and container arguments `args`: the script runs with a stand-in `aspired` that prints its argv."""
    bin_dir = tmp / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "aspired"
    fake.write_text(_FAKE_SERVER)
    fake.chmod(0o755)
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.split("\0")[:-1]


def parse_flags(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Options:
    """`argv` through the server's own parser; every argument must be a flag it knows."""
    options, unknown = parse_command_line(list(argv), dict(env or {}))
    assert unknown == [], f"arguments the server does not accept: {unknown}"
    return options


def container_env(container: Manifest, manifests: Sequence[Manifest]) -> dict[str, str]:
    """The environment of a container: the image's ENV, then envFrom ConfigMaps/Secrets, then env literals."""
    env = image_env()
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(manifests, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            secret = one(manifests, "Secret", source["secretRef"]["name"])
            env.update(secret.get("stringData", {}))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def documented_variables() -> set[str]:
    """The variable names .env.example documents (`NAME=` lines, or `# NAME=` for those unset by default)."""
    text = (REPO / ".env.example").read_text()
    return set(re.findall(r"^(?:#\s*)?([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def monitoring_path() -> str:
    """The Prometheus path of the monitoring config the image ships (deploy/docker/monitoring.config)."""
    from svc.config_files import MonitoringConfig

    config = parse_text_config(copied_to("/etc/aspired/monitoring.config"), MonitoringConfig)
    assert config.prometheus_config.enable
    return str(config.prometheus_config.path)


class EntrypointServer(ServerProcess):
    """The real server started the way the image starts it: `sh deploy/docker/entrypoint.sh ARGS`, with the
    test's ports appended (they win, as any appended flag does). The `aspired` the entrypoint execs is, first
    on PATH, the console script's `svc.cli.main` run by `tests.e2e.launch` on the sockets this test bound."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str]) -> None:
        super().__init__([], env=dict(env))
        tool("aspired")  # the console script the image has
        self._bin = Path(tempfile.mkdtemp(prefix="aspired-bin-"))
        shim = self._bin / "aspired"
        shim.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
            "from tests.e2e.launch import main\nraise SystemExit(main())\n"
        )
        shim.chmod(0o755)
        ports = [f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}"]
        self.args = ["sh", str(ENTRYPOINT), *args, *ports]
        self.env["PATH"] = f"{self._bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"

    def stop(self, timeout: float = 60.0) -> int:
        code = super().stop(timeout)
        shutil.rmtree(self._bin, ignore_errors=True)
        return code

    def command_line(self) -> list[str]:
        """The running server's argv, read from /proc: the entrypoint exec'd into it under the same pid."""
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/cmdline").read_bytes().decode().split("\0")[:-1]
