"""Upload a model's version directories to S3, as the seeds' `s3cmd put --recursive` does: the one-shot job of
deploy/compose/compose.yaml, and a way to roll out a version anywhere.

    python upload_model.py SOURCE s3://BUCKET/PREFIX [--wait=60]

SOURCE is a model's base directory (numbered version directories, e.g. `1/`, `00000123/`) or one version
directory (its name is the version). Each version is uploaded to `s3://BUCKET/PREFIX/<version>/...` with its
`saved_model.pb` last, so a server polling the prefix never sees a half-uploaded version as complete; a version
whose `saved_model.pb` is already there is skipped (re-running the job is harmless). The bucket is created if it
does not exist. `--wait` retries the first request while the endpoint is still starting (MinIO in compose).

The endpoint and credentials come from the same environment variables the server reads (see .env.example):
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, S3_ENDPOINT (host[:port] of an S3-compatible store; empty =
AWS), S3_USE_HTTPS (1/0), S3_VERIFY_SSL (1/0). Needs only botocore, which the aspired image has (via s3fs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import botocore.config
import botocore.exceptions
import botocore.session

SAVED_MODEL = "saved_model.pb"


def endpoint_url(env: Mapping[str, str]) -> str | None:
    """S3_ENDPOINT as a URL: `host:port` gets http:// when S3_USE_HTTPS is 0, else https://; None for AWS."""
    endpoint = env.get("S3_ENDPOINT", "").strip()
    if not endpoint:
        return None
    if "://" in endpoint:
        return endpoint
    scheme = "http" if env.get("S3_USE_HTTPS", "1").strip() == "0" else "https"
    return f"{scheme}://{endpoint}"


def s3_client(env: Mapping[str, str]) -> Any:
    session = botocore.session.get_session()
    url = endpoint_url(env)
    return session.create_client(
        "s3",
        region_name=env.get("AWS_REGION") or "us-east-1",
        endpoint_url=url,
        verify=env.get("S3_VERIFY_SSL", "1").strip() != "0",
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        # S3-compatible stores (MinIO, Ceph RGW) address buckets by path, not by host name.
        config=botocore.config.Config(s3={"addressing_style": "path" if url else "auto"}),
    )


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise SystemExit(f"destination must be s3://bucket/prefix, got {uri!r}")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise SystemExit(f"no bucket in {uri!r}")
    return bucket, prefix.strip("/")


def versions(source: Path) -> list[Path]:
    """The version directories of `source` (or `source` itself when it is one), in numeric order."""
    if source.name.isdigit() and (source / SAVED_MODEL).is_file():
        return [source]
    found = [child for child in source.iterdir() if child.is_dir() and child.name.isdigit()]
    if not found:
        raise SystemExit(f"no numbered version directories in {source}")
    return sorted(found, key=lambda path: int(path.name))


def files_in_upload_order(version: Path) -> Iterator[Path]:
    """Every file of a version directory, saved_model.pb last."""
    files = sorted(path for path in version.rglob("*") if path.is_file())
    yield from (path for path in files if path.name != SAVED_MODEL or path.parent != version)
    if (version / SAVED_MODEL).is_file():
        yield version / SAVED_MODEL


def wait_for_bucket(client: Any, bucket: str, wait: float) -> None:
    """Create `bucket` unless it exists, retrying connection errors for `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            try:
                client.head_bucket(Bucket=bucket)
            except botocore.exceptions.ClientError as error:
                if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                    raise
                client.create_bucket(Bucket=bucket)
                log(f"created bucket {bucket}")
            return
        except botocore.exceptions.EndpointConnectionError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)


def exists(client: Any, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def upload(source: Path, destination: str, env: Mapping[str, str], wait: float = 0.0) -> list[str]:
    """Upload every version of `source` below `destination`; the keys written, in order."""
    bucket, prefix = parse_s3_uri(destination)
    client = s3_client(env)
    wait_for_bucket(client, bucket, wait)
    written: list[str] = []
    for version in versions(source):
        base = "/".join(part for part in (prefix, version.name) if part)
        if exists(client, bucket, f"{base}/{SAVED_MODEL}"):
            log(f"s3://{bucket}/{base} already uploaded, skipped")
            continue
        for path in files_in_upload_order(version):
            key = f"{base}/{path.relative_to(version).as_posix()}"
            with path.open("rb") as body:
                client.put_object(Bucket=bucket, Key=key, Body=body)
            written.append(key)
        log(f"uploaded {version} to s3://{bucket}/{base}")
    return written


def log(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="model base directory or one version directory")
    parser.add_argument("destination", help="s3://bucket/prefix of the model (versions go below it)")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to retry while the endpoint starts")
    options = parser.parse_args(argv)
    upload(options.source, options.destination, os.environ, options.wait)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
