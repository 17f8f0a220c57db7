"""Version discovery against a real server and real directories: publication safety (a version copied in slowly
is never loaded half-way, tfs#1086), storage blips do not unload (tfs#1480), explicit removal unloads, and the
ready marker."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import Server
from tests.paths import testdata

pytestmark = pytest.mark.e2e

SOURCE = testdata("saved_model_half_plus_two_cpu") / "00000123"
POLL = 1  # --file_system_poll_wait_seconds in these tests (whole seconds); checks wait for polls, not for time


def copy_file(name: str, target: Path, limit: int | None = None) -> None:
    """Copy one file of the test model (the test data is read-only; copies must not be)."""
    data = (SOURCE / name).read_bytes()
    path = target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if limit is None else data[:limit])


def copy_version(target: Path) -> Path:
    for source in SOURCE.rglob("*"):
        if source.is_file():
            copy_file(str(source.relative_to(SOURCE)), target)
    return target


def predict(server: Server, model: str = "m") -> list[list[float]]:
    r = httpx.post(f"{server.rest_url}/v1/models/{model}:predict", json={"instances": [[1.0]]}, timeout=10)
    assert r.status_code == 200, r.text
    predictions: list[list[float]] = r.json()["predictions"]
    return predictions


def states(server: Server, model: str = "m") -> dict[int, str]:
    r = httpx.get(f"{server.rest_url}/v1/models/{model}", timeout=10)
    assert r.status_code == 200, r.text
    return {int(s["version"]): s["state"] for s in r.json()["model_version_status"]}


def aspired_sets(server: Server) -> list[list[int]]:
    return [e["versions"] for e in server.events("aspired_versions_received")]  # type: ignore[misc]


def events(server: Server, name: str) -> list[dict[str, object]]:
    return server.events(name)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(base: Path, *flags: str) -> Server:
        server = Server(
            ["--model_name=m", f"--model_base_path={base}", f"--file_system_poll_wait_seconds={POLL}", *flags]
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def test_version_copied_slowly_is_loaded_only_once_complete(tmp_path: Path,
                                                              serve: Callable[..., Server]) -> None:
    base = tmp_path / "m"
    copy_version(base / "1")
    server = serve(base)
    assert predict(server) == [[2.5]]
    assert states(server) == {1: "AVAILABLE"}

    v2 = base / "2"

    def write_slowly(name: str, chunks: int = 4) -> None:
        """A large file being copied: it grows between any two consecutive polls (each chunk is written as
        soon as a poll has finished, well within the second before the next one starts)."""
        data = (SOURCE / name).read_bytes()
        path = v2 / name
        with path.open("wb") as out:
            for i in range(chunks):
                out.write(data[i * len(data) // chunks : (i + 1) * len(data) // chunks])
                out.flush()
                if i < chunks - 1:
                    server.wait_for_polls(1)

    def check() -> None:
        assert predict(server) == [[2.5]]
        assert all(2 not in versions for versions in aspired_sets(server)), server.output()
        assert 2 not in states(server)

    steps: list[Callable[[], None]] = [
        lambda: copy_file("assets/foo.txt", v2),
        lambda: copy_file("variables/variables.index", v2),
        lambda: copy_file("saved_model.pb", v2),  # the index names a data shard that is not there yet
        lambda: write_slowly("variables/variables.data-00000-of-00001"),  # every name there, still growing
    ]
    for step in steps[:-1]:
        step()
        check()
        server.wait_for_polls()  # a whole poll saw this step
        check()
    steps[-1]()  # complete now, but published only after one more identical listing (not_ready below)
    server.wait_for_version_state("m", 2, "AVAILABLE", timeout=30)
    server.wait_for_version_state("m", 1, "END", timeout=30)
    assert predict(server) == [[2.5]]
    assert events(server, "servable_load_attempt_failed") == []
    assert events(server, "servable_load_failed") == []
    assert [e["version"] for e in events(server, "version_published")] == [1, 2]
    not_ready = [e["reason"] for e in events(server, "version_not_ready") if e["version"] == 2]
    assert not_ready[:2] == ["no saved_model.pb or saved_model.pbtxt",
                             "variables/variables.index present without data shards"]
    assert "listing changed since the previous poll" in not_ready


def test_storage_blips_do_not_unload(tmp_path: Path, serve: Callable[..., Server]) -> None:
    base = tmp_path / "m"
    copy_version(base / "1")
    server = serve(base)
    assert predict(server) == [[2.5]]

    aside = tmp_path / "aside"
    aside.mkdir()
    (base / "1").rename(aside / "1")  # the base path answers, but lists nothing
    server.wait_for_event("storage_listing_suddenly_empty")
    server.wait_for_polls()
    assert predict(server) == [[2.5]]
    assert states(server) == {1: "AVAILABLE"}

    base.rename(tmp_path / "moved")  # the base path itself is gone: unknown too
    server.wait_for_event("storage_poll_failed")
    server.wait_for_polls()
    assert predict(server) == [[2.5]]

    (tmp_path / "moved").rename(base)
    (aside / "1").rename(base / "1")
    server.wait_for_event("storage_poll_recovered")
    assert states(server) == {1: "AVAILABLE"}
    assert events(server, "servable_unloaded") == []
    assert aspired_sets(server) == [[1]]  # announced once; the blips changed nothing


def test_explicit_removal_unloads(tmp_path: Path, serve: Callable[..., Server]) -> None:
    base = tmp_path / "m"
    copy_version(base / "1")
    copy_version(base / "2")
    server = serve(base)
    assert states(server) == {2: "AVAILABLE"}
    shutil.rmtree(base / "2")
    server.wait_for_version_state("m", 1, "AVAILABLE", timeout=30)  # present since start-up: no extra wait
    server.wait_for_version_state("m", 2, "END", timeout=30)
    assert predict(server) == [[2.5]]


def test_ready_marker(tmp_path: Path, serve: Callable[..., Server]) -> None:
    base = tmp_path / "m"
    copy_version(base / "1")
    (base / "1" / "READY").touch()
    copy_version(base / "2")  # complete, but not marked
    server = serve(base, "--version_ready_marker=READY")
    assert states(server) == {1: "AVAILABLE"}
    server.wait_for_polls(3)
    assert 2 not in states(server)
    (base / "2" / "READY").touch()
    server.wait_for_version_state("m", 2, "AVAILABLE", timeout=30)
    assert predict(server) == [[2.5]]


def test_half_copied_version_at_startup_is_skipped(tmp_path: Path, serve: Callable[..., Server]) -> None:
    base = tmp_path / "m"
    copy_version(base / "1")
    copy_file("saved_model.pb", base / "2")
    copy_file("variables/variables.index", base / "2")  # the data shard is missing
    server = serve(base)
    assert states(server) == {1: "AVAILABLE"}  # starts at once with the newest complete version
    copy_file("variables/variables.data-00000-of-00001", base / "2")
    copy_file("assets/foo.txt", base / "2")
    server.wait_for_version_state("m", 2, "AVAILABLE", timeout=30)
    assert events(server, "servable_load_attempt_failed") == []
