"""deploy/compose: the file follows the Compose specification, its S3 wiring uses the documented variables, and
the same wiring runs without containers: moto's S3 server on loopback plays MinIO, the upload job runs its own
command with the compose environment and uploads TF Serving's test model, and the server's flags (entrypoint plus
the service's command) point at the prefix the job wrote."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import jsonschema
import pytest
import yaml
from moto.server import ThreadedMotoServer

from tests.deploy.helpers import (
    DEPLOY,
    SCHEMAS,
    EntrypointServer,
    copied_to,
    documented_variables,
    entrypoint_argv,
    image_env,
    parse_flags,
)
from tests.paths import REPO, testdata

COMPOSE = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE / "compose.yaml"
S3_VARIABLES = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "S3_ENDPOINT",
    "S3_USE_HTTPS",
    "S3_VERIFY_SSL",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's `${NAME}` / `${NAME:-default}` interpolation (the only forms the file uses)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value
    result = _VARIABLE.sub(lambda m: env.get(m.group(1)) or m.group(2) or "", value)
    assert "$" not in result, f"unsupported interpolation in {value!r}"
    return result


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file as `docker compose config` resolves it, with no variables set (the defaults)."""
    document: dict[str, Any] = interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env or {})
    return document


def service(name: str) -> dict[str, Any]:
    result: dict[str, Any] = compose()["services"][name]
    return result


def host_path(service_name: str, container_path: str) -> Path:
    """The host side of the bind mount that holds `container_path` in a service."""
    for volume in service(service_name).get("volumes", []):
        source, target, *_ = volume.split(":")
        if container_path == target or container_path.startswith(target + "/"):
            return Path(COMPOSE / source).resolve() / container_path.removeprefix(target).lstrip("/")
    raise AssertionError(f"{container_path} is not mounted in {service_name}")


def test_the_file_follows_the_compose_specification() -> None:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load(COMPOSE_FILE.read_text()))
    assert set(compose()["services"]) == {"minio", "upload-model", "aspired"}


def test_services_start_in_order_from_the_repositorys_image() -> None:
    aspired, upload = service("aspired"), service("upload-model")
    assert aspired["depends_on"] == {"upload-model": {"condition": "service_completed_successfully"}}
    assert upload["depends_on"] == ["minio"]
    for item in (aspired, upload):
        assert (COMPOSE / item["build"]["context"]).resolve() == REPO
        assert (REPO / item["build"]["dockerfile"]).is_file()
    assert aspired["image"] == upload["image"]
    assert host_path("upload-model", upload["entrypoint"][1]) == COMPOSE / "upload_model.py"
    assert all(
        port.startswith("127.0.0.1:") for s in compose()["services"].values() for port in s.get("ports", [])
    )


def test_environment_is_the_documented_variables() -> None:
    aspired, upload = service("aspired"), service("upload-model")
    assert aspired["environment"].keys() >= S3_VARIABLES
    assert aspired["environment"].keys() <= documented_variables()
    assert upload["environment"] == {name: aspired["environment"][name] for name in S3_VARIABLES}
    minio = service("minio")["environment"]
    assert aspired["environment"]["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert aspired["environment"]["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    custom = compose({"MINIO_ROOT_USER": "u", "MINIO_ROOT_PASSWORD": "p"})["services"]
    assert custom["aspired"]["environment"]["AWS_SECRET_ACCESS_KEY"] == "p"


def test_endpoint_names_the_minio_service() -> None:
    host, _, port = service("aspired")["environment"]["S3_ENDPOINT"].partition(":")
    assert host == "minio"
    assert port in {p.rsplit(":", 1)[1] for p in service("minio")["ports"]}
    assert service("aspired")["environment"]["S3_USE_HTTPS"] == "0"  # MinIO here speaks plain http


def test_server_reads_the_prefix_the_job_writes(tmp_path: Path) -> None:
    aspired, upload = service("aspired"), service("upload-model")
    env = {**image_env(), **aspired["environment"]}
    options = parse_flags(entrypoint_argv(env, aspired["command"], tmp_path), env)
    destination = upload["command"][-1]
    assert options.model_base_path == destination == "s3://models/half_plus_two"
    assert options.model_name == "half_plus_two"
    copied_to(options.monitoring_config_file)


# --- the wiring, run without containers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback, in MinIO's place: `host:port`, as S3_ENDPOINT takes it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield f"127.0.0.1:{server.get_host_and_port()[1]}"
    finally:
        server.stop()


def run_upload_job(endpoint: str, demo: Path) -> subprocess.CompletedProcess[str]:
    """The upload-model service's entrypoint and command, with its mounts mapped to host paths: the script from
    deploy/compose, `demo` as the mounted model directory."""
    upload = service("upload-model")
    env = {**upload["environment"], "S3_ENDPOINT": endpoint}
    _python, script = upload["entrypoint"]
    args = [str(demo) if arg == "/demo/half_plus_two" else arg for arg in upload["command"]]
    assert str(demo) in args
    return subprocess.run(
        [sys.executable, str(host_path("upload-model", script)), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def s3_keys(endpoint: str, bucket: str, prefix: str) -> set[str]:
    env = service("aspired")["environment"]
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{endpoint}",
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {item["Key"] for item in listing.get("Contents", [])}


@pytest.mark.e2e
def test_upload_job_publishes_the_model_where_the_server_looks(s3_endpoint: str, tmp_path: Path) -> None:
    model = testdata("saved_model_half_plus_two_cpu")
    demo = tmp_path / "half_plus_two"
    demo.symlink_to(model)
    expected = {
        f"half_plus_two/{path.relative_to(model).as_posix()}" for path in model.rglob("*") if path.is_file()
    }
    assert "half_plus_two/00000123/saved_model.pb" in expected

    first = run_upload_job(s3_endpoint, demo)
    assert first.returncode == 0, first.stderr
    assert "created bucket models" in first.stdout
    assert s3_keys(s3_endpoint, "models", "half_plus_two/") == expected

    again = run_upload_job(s3_endpoint, demo)  # `docker compose up` again: nothing is uploaded twice
    assert again.returncode == 0, again.stderr
    assert "already uploaded, skipped" in again.stdout


@pytest.mark.e2e
def test_server_serves_what_the_job_uploaded(s3_endpoint: str, tmp_path: Path) -> None:
    """The aspired service outside its container: the image's entrypoint with the service's environment and
    command (S3_ENDPOINT pointed at moto, the image's monitoring.config at the repository's copy)."""
    demo = tmp_path / "half_plus_two"
    demo.symlink_to(testdata("saved_model_half_plus_two_cpu"))
    assert run_upload_job(s3_endpoint, demo).returncode == 0
    aspired = service("aspired")
    env = {
        **image_env(),
        **aspired["environment"],
        "S3_ENDPOINT": s3_endpoint,
        "ASPIRED_CACHE_DIR": str(tmp_path),
    }
    image_file = "/etc/aspired/monitoring.config"
    args = [arg.replace(image_file, str(copied_to(image_file))) for arg in aspired["command"]]
    server = EntrypointServer(args, env)
    with server:
        status = httpx.get(f"{server.rest_url}/v1/models/half_plus_two", timeout=10).json()
        assert status["model_version_status"][0]["version"] == "123"
        assert [s["state"] for s in status["model_version_status"]] == ["AVAILABLE"]
        body = {"instances": [1.0, 2.0, 5.0]}
        predict = httpx.post(f"{server.rest_url}/v1/models/half_plus_two:predict", json=body, timeout=10)
        assert predict.json() == {"predictions": [2.5, 3.0, 4.5]}
    assert env["AWS_SECRET_ACCESS_KEY"] not in server.output(), "the secret key never reaches a log line"


def load_upload_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("upload_model", COMPOSE / "upload_model.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_saved_model_pb_is_uploaded_last() -> None:
    """A server polling the prefix mid-upload must not find a complete-looking version."""
    upload_model = load_upload_module()
    version = testdata("saved_model_half_plus_two_cpu") / "00000123"
    order = [path.relative_to(version).as_posix() for path in upload_model.files_in_upload_order(version)]
    assert order[-1] == "saved_model.pb"
    assert sorted(order) == sorted(
        p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file()
    )


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, None),
        ({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "0"}, "http://minio:9000"),
        ({"S3_ENDPOINT": "rgw.example:7480"}, "https://rgw.example:7480"),
        ({"S3_ENDPOINT": "http://127.0.0.1:9000", "S3_USE_HTTPS": "1"}, "http://127.0.0.1:9000"),
    ],
)
def test_endpoint_url_follows_the_documented_meaning(env: dict[str, str], url: str | None) -> None:
    assert load_upload_module().endpoint_url(env) == url
