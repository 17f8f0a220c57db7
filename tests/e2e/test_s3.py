"""An `s3://` base path against a real S3 endpoint on loopback (moto's server mode, started here): discovery
with TF Serving's S3 environment variables and path-style addressing, a hot swap, an endpoint outage while
serving (nothing unloads), recovery picking up a new version, and the local cache."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import httpx
import pytest
from moto.server import ThreadedMotoServer

from svc.lifecycle.loader_pool import LoaderPool
from tests.e2e.server import Server
from tests.paths import testdata

pytestmark = pytest.mark.e2e

SOURCE = testdata("saved_model_half_plus_two_cpu") / "00000123"
BUCKET = "models-bucket"
PREFIX = "models/half_plus_two"
SECRET = "s3cr3t-never-logged-4f9a"
# A version's copy is deleted when it unloads once LoaderPool calls back after closing a servable (its
# `on_unloaded` hook, wired to VersionCache.evict by the supervisor); until then, when the process exits.
EVICTS_ON_UNLOAD = "on_unloaded" in inspect.signature(LoaderPool).parameters


class Moto:
    """moto's S3 in this process on 127.0.0.1; its buckets live in this process and survive a restart."""

    def __init__(self) -> None:
        self.port = 0
        self.server: ThreadedMotoServer | None = None

    def start(self) -> Moto:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.port = self.server.get_host_and_port()[1]
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            if self.server._server is not None:
                self.server._server.server_close()  # free the port: connections are refused, not left pending
            self.server = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> object:
        return boto3.client(
            "s3", endpoint_url=f"http://{self.endpoint}", aws_access_key_id="AKIDTEST",
            aws_secret_access_key=SECRET, region_name="us-east-1",
        )


@pytest.fixture
def moto() -> Iterator[Moto]:
    server = Moto().start()
    yield server
    server.stop()


def upload_version(s3: object, version: int) -> None:
    # A "folder" marker object, as the S3 console and some sync tools create: listed, fetched as a directory.
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{version}/variables/", Body=b"")  # type: ignore[attr-defined]
    for path in sorted(SOURCE.rglob("*")):
        if path.is_file():
            key = f"{PREFIX}/{version}/{path.relative_to(SOURCE).as_posix()}"
            s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())  # type: ignore[attr-defined]


def predict(server: Server) -> list[list[float]]:
    r = httpx.post(f"{server.rest_url}/v1/models/half_plus_two:predict", json={"instances": [[1.0]]}, timeout=10)
    assert r.status_code == 200, r.text
    predictions: list[list[float]] = r.json()["predictions"]
    return predictions


def states(server: Server) -> dict[int, str]:
    r = httpx.get(f"{server.rest_url}/v1/models/half_plus_two", timeout=10)
    assert r.status_code == 200, r.text
    return {int(s["version"]): s["state"] for s in r.json()["model_version_status"]}


def copies(cache: Path) -> list[str]:
    """The version copies in the cache (one per-process directory holding them)."""
    return sorted(name for root in cache.iterdir() for name in os.listdir(root) if not name.startswith("."))


def test_s3_discovery_hot_swap_outage_and_recovery(moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = moto.client()
    s3.create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
    upload_version(s3, 1)
    cache = tmp_path / "cache"
    env = {
        "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1",
        "S3_ENDPOINT": moto.endpoint, "S3_USE_HTTPS": "0", "S3_VERIFY_SSL": "0",
        "ASPIRED_CACHE_DIR": str(cache),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # read by the in-process server
    server = Server(
        ["--model_name=half_plus_two", f"--model_base_path=s3://{BUCKET}/{PREFIX}",
         "--file_system_poll_wait_seconds=1"],
    )
    with server:
        assert predict(server) == [[2.5]]
        assert states(server) == {1: "AVAILABLE"}
        assert [c.rsplit("-", 1)[-1] for c in copies(cache)] == ["1"]

        # Hot swap: version 2 is uploaded object by object; it is served once complete and stable, 1 unloads.
        upload_version(s3, 2)
        server.wait_for_version_state("half_plus_two", 2, "AVAILABLE", timeout=30)
        server.wait_for_version_state("half_plus_two", 1, "END", timeout=30)
        assert predict(server) == [[2.5]]
        if EVICTS_ON_UNLOAD:
            assert [c.rsplit("-", 1)[-1] for c in copies(cache)] == ["2"]

        # Endpoint outage: polls fail, warnings are logged, nothing unloads, requests keep being served.
        seen = server.mark()
        moto.stop()
        server.wait_for_event("storage_poll_failed", after=seen)
        server.wait_for_polls()
        assert predict(server) == [[2.5]]
        assert states(server) == {2: "AVAILABLE", 1: "END"}

        # Recovery on the same port (moto keeps its buckets in this process): a new version is picked up.
        moto.start()
        upload_version(s3, 3)
        server.wait_for_event("storage_poll_recovered", after=seen)
        server.wait_for_version_state("half_plus_two", 3, "AVAILABLE", timeout=30)
        server.wait_for_version_state("half_plus_two", 2, "END", timeout=30)
        assert predict(server) == [[2.5]]

    events = server.log_events()
    assert not [e for e in events if e.get("event") in ("servable_load_attempt_failed", "servable_load_failed")]
    opened = [e for e in events if e.get("event") == "storage_opened"]
    assert opened[0]["endpoint"] == f"http://{moto.endpoint}"
    assert opened[0]["addressing_style"] == "path"
    assert opened[0]["credentials"] == "environment"
    assert SECRET not in server.output()
    assert list(cache.iterdir()) == []  # the server's cache directory is removed when it stops
