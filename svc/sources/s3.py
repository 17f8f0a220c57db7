"""S3 settings from the environment TF Serving users already set, as s3fs constructor arguments. Pure.

Mirrors the variables of TensorFlow's S3 file system (`tensorflow/core/platform/s3/s3_file_system.cc`, now in
tensorflow-io), which `tensorflow_model_server` reads for `s3://` base paths:

| variable | meaning |
|---|---|
| `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` | credentials; unset = botocore's default chain (shared config files, instance or pod role, ...) |
| `AWS_REGION` (else `S3_REGION`, else `AWS_DEFAULT_REGION`) | region of the bucket |
| `S3_ENDPOINT` | `host[:port]` or a full URL of an S3-compatible store (MinIO, Ceph, moto); unset = AWS. With an endpoint, path-style addressing is used (`http://host/bucket/key`), as TensorFlow does |
| `S3_USE_HTTPS` | `1` (default) https, `0` http — for an `S3_ENDPOINT` without a scheme |
| `S3_VERIFY_SSL` | `1` (default) verify the endpoint's certificate, `0` do not |
| `S3_CONNECT_TIMEOUT_MSEC`, `S3_REQUEST_TIMEOUT_MSEC` | timeouts (defaults here 10 s and 60 s) |

Secrets never reach a log line: `describe` gives the loggable part of the options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_FALSE = ("0", "false", "no", "off")
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0
DEFAULT_READ_TIMEOUT_SECONDS = 60.0
DEFAULT_MAX_ATTEMPTS = 3


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = environ.get(name, "").strip().lower()
    if not value:
        return default
    return value not in _FALSE


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    try:
        millis = float(environ.get(name, ""))
    except ValueError:
        return default
    return millis / 1000 if millis > 0 else default


def endpoint_url(environ: Mapping[str, str]) -> str | None:
    """`S3_ENDPOINT` as a URL: a scheme is added from `S3_USE_HTTPS` when the value has none."""
    endpoint = environ.get("S3_ENDPOINT", "").strip()
    if not endpoint:
        return None
    if "://" in endpoint:
        return endpoint
    scheme = "https" if _flag(environ, "S3_USE_HTTPS", True) else "http"
    return f"{scheme}://{endpoint}"


def s3_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments of `s3fs.S3FileSystem` for this environment."""
    options: dict[str, Any] = {}
    key = environ.get("AWS_ACCESS_KEY_ID", "")
    secret = environ.get("AWS_SECRET_ACCESS_KEY", "")
    if key and secret:
        options["key"] = key
        options["secret"] = secret
        if token := environ.get("AWS_SESSION_TOKEN", ""):
            options["token"] = token
    client: dict[str, Any] = {}
    config: dict[str, Any] = {
        "connect_timeout": _seconds(environ, "S3_CONNECT_TIMEOUT_MSEC", DEFAULT_CONNECT_TIMEOUT_SECONDS),
        "read_timeout": _seconds(environ, "S3_REQUEST_TIMEOUT_MSEC", DEFAULT_READ_TIMEOUT_SECONDS),
        "retries": {"max_attempts": DEFAULT_MAX_ATTEMPTS, "mode": "standard"},
    }
    region = environ.get("AWS_REGION") or environ.get("S3_REGION") or environ.get("AWS_DEFAULT_REGION")
    url = endpoint_url(environ)
    if url is not None:
        client["endpoint_url"] = url
        config["s3"] = {"addressing_style": "path"}
        region = region or "us-east-1"  # S3-compatible stores ignore it, but requests must be signed for one
    if region:
        client["region_name"] = region
    if not _flag(environ, "S3_VERIFY_SSL", True):
        client["verify"] = False
    options["client_kwargs"] = client
    options["config_kwargs"] = config
    return options


def describe(options: Mapping[str, Any]) -> dict[str, Any]:
    """The loggable settings: endpoint, region, addressing, TLS verification and where credentials come from."""
    client = options.get("client_kwargs", {})
    config = options.get("config_kwargs", {})
    return {
        "endpoint": client.get("endpoint_url", "aws"),
        "region": client.get("region_name", "default"),
        "addressing_style": config.get("s3", {}).get("addressing_style", "auto"),
        "verify_ssl": client.get("verify", True),
        "credentials": "environment" if "key" in options else "default chain",
    }
