"""Storage listing rules (TF Serving's numeric version directories), completeness of a version directory, the
local and fsspec implementations, S3 settings from the environment, and the local version cache."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import fsspec
import pytest

from svc.errors import Code, ServingError
from svc.sources.publication import completeness, keras_refusal
from svc.sources.s3 import describe, endpoint_url, s3_options
from svc.sources.storage import (
    Files,
    FsspecStorage,
    Listing,
    LocalStorage,
    StorageError,
    parse_version,
    scheme,
    storage_for,
    versions_from,
)
from svc.sources.version_cache import VersionCache

# --- numeric names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("1", 1),
        ("00000123", 123),  # leading zeros, as TF Serving's test data
        ("0", 0),
        ("+7", 7),  # absl::SimpleAtoi accepts a plus sign
        (str(2**63 - 1), 2**63 - 1),
        (str(2**63), None),  # beyond int64
        ("-1", None),
        ("1a", None),
        ("v1", None),
        ("1.0", None),
        (" 1", None),
        ("", None),
        ("tmp", None),
        ("\u0661", None),  # non-ASCII digits are not numbers to TF
    ],
)
def test_parse_version(name: str, version: int | None) -> None:
    assert parse_version(name) == version


@pytest.mark.parametrize(
    ("children", "versions", "duplicates"),
    [
        ([], {}, ()),
        ([("1", "/b/1"), ("2", "/b/2")], {1: "/b/1", 2: "/b/2"}, ()),
        ([("00000123", "/b/00000123"), ("tmp", "/b/tmp"), (".1", "/b/.1")], {123: "/b/00000123"}, ()),
        # two names for one number: the first by name wins, the other is reported
        ([("1", "/b/1"), ("001", "/b/001")], {1: "/b/001"}, ("1",)),
        ([("7", "/b/7"), ("07", "/b/07"), ("007", "/b/007")], {7: "/b/007"}, ("07", "7")),
    ],
)
def test_versions_from(children: list[tuple[str, str]], versions: dict[int, str], duplicates: tuple[str, ...]) -> None:
    assert versions_from(children) == Listing(versions, duplicates)


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/models/m", ""), ("file:///models/m", "file"), ("s3://b/m", "s3"), ("S3://b/m", "s3"),
     ("gs://b/m", "gs"), ("memory://m", "memory"), ("relative/x://y", "")],
)
def test_scheme(path: str, expected: str) -> None:
    assert scheme(path) == expected


# --- completeness ---------------------------------------------------------------------------------------

PB = {"saved_model.pb": 100}
INDEX = {"variables/": 0, "variables/variables.index": 10}


def shards(*names: str) -> dict[str, int]:
    return {f"variables/variables.data-{n}": 5 for n in names}


@pytest.mark.parametrize(
    ("files", "marker", "reason"),
    [
        ({**PB, **INDEX, **shards("00000-of-00001")}, "", None),
        ({"saved_model.pbtxt": 3, **INDEX, **shards("00000-of-00001")}, "", None),
        ({**PB, **INDEX, **shards("00000-of-00002", "00001-of-00002")}, "", None),
        ({**PB, "assets/": 0, "assets/foo.txt": 3, "fingerprint.pb": 1, **INDEX, **shards("00000-of-00001")}, "",
         None),
        # variable-free models: no variables files at all (TF2 / S3) or an empty variables/ (TF1 builder)
        (PB, "", None),
        ({**PB, "variables/": 0}, "", None),
        # incomplete
        ({}, "", "no saved_model.pb or saved_model.pbtxt"),
        ({"variables/": 0, **INDEX, **shards("00000-of-00001")}, "", "no saved_model.pb or saved_model.pbtxt"),
        ({"saved_model.pb/": 0}, "", "no saved_model.pb or saved_model.pbtxt"),  # a directory is not the file
        ({**PB, **shards("00000-of-00001")}, "", "variables/variables.index missing"),
        ({**PB, **INDEX}, "", "variables/variables.index present without data shards"),
        ({**PB, **INDEX, **shards("00001-of-00002")}, "",
         "missing variables data shard(s) variables.data-00000-of-00002"),
        ({**PB, **INDEX, **shards("00000-of-00003")}, "",
         "missing variables data shard(s) variables.data-00001-of-00003, variables.data-00002-of-00003"),
        ({**PB, **INDEX, **shards("00000-of-00006")}, "",
         ("missing variables data shard(s) variables.data-00001-of-00006, variables.data-00002-of-00006, "
          "variables.data-00003-of-00006 and 2 more")),
        ({**PB, **INDEX, **shards("00000-of-00001", "00000-of-00002")}, "",
         "variables data shards of different counts [1, 2]"),
        # the marker is required when configured, in addition to completeness
        ({**PB, **INDEX, **shards("00000-of-00001")}, "READY", "marker file READY not present"),
        ({**PB, **INDEX, **shards("00000-of-00001"), "READY": 0}, "READY", None),
        ({**PB, **INDEX, "READY": 0}, "READY", "variables/variables.index present without data shards"),
        ({**PB, "meta/done": 0}, "meta/done", None),
        # other formats count as complete: their load fails with TF Serving's own error text
        ({"export.meta": 5, "export": 5, "checkpoint": 1}, "", None),
        ({"model.tflite": 5}, "", None),
        ({"model.tflite": 5}, "READY", "marker file READY not present"),
        # a Keras file instead of a SavedModel is refused (issue 13); beside a SavedModel it is just a file
        ({"model.keras": 5}, "", keras_refusal("model.keras")),
        ({"weights.h5": 5, "assets/": 0}, "", keras_refusal("weights.h5")),
        ({**PB, **INDEX, **shards("00000-of-00001"), "model.keras": 5}, "", None),
    ],
)
def test_completeness(files: dict[str, int], marker: str, reason: str | None) -> None:
    assert completeness(files, marker) == reason


def test_completeness_of_tf_serving_test_data() -> None:
    from tests.paths import testdata

    storage = LocalStorage()
    for name in ("saved_model_half_plus_two_cpu", "saved_model_half_plus_two_tf2_cpu", "saved_model_counter"):
        version = storage.list_versions(str(testdata(name))).versions[123]
        assert completeness(storage.list_files(version)) is None
    bad = storage.list_versions(str(testdata("bad_half_plus_two"))).versions[123]
    assert completeness(storage.list_files(bad)) is None  # loads, to fail with "Session Bundle is deprecated"


# --- local storage --------------------------------------------------------------------------------------


def write(root: Path, files: Mapping[str, int]) -> None:
    for name, size in files.items():
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)


def test_local_list_versions(tmp_path: Path) -> None:
    write(tmp_path, {"1/": 0, "0002/": 0, "x/": 0, "3": 4, "002/": 0})
    (tmp_path / "9").symlink_to(tmp_path / "1")  # a symlinked version directory counts
    listing = LocalStorage().list_versions(str(tmp_path))
    assert listing.versions == {1: str(tmp_path / "1"), 2: str(tmp_path / "0002"), 9: str(tmp_path / "9")}
    assert listing.duplicates == ("002",)
    assert LocalStorage().list_versions(f"file://{tmp_path}").versions.keys() == {1, 2, 9}


def test_local_listing_names_keras_files(tmp_path: Path) -> None:
    # issue 13: a Keras file where versions are expected is reported, to be refused with a clear log line
    write(tmp_path, {"1/": 0, "model.keras": 3, "notes.txt": 1, "old.h5": 2})
    listing = LocalStorage().list_versions(str(tmp_path))
    assert listing.versions == {1: str(tmp_path / "1")}
    assert listing.keras_files == (f"{tmp_path}/model.keras", f"{tmp_path}/old.h5")
    keras = str(tmp_path / "model.keras")
    assert LocalStorage().list_versions(keras) == Listing({}, keras_files=(keras,))


def test_local_list_versions_of_a_missing_base_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=f"Could not find base path {tmp_path}/nope"):
        LocalStorage().list_versions(str(tmp_path / "nope"))


def test_local_list_files_lists_names_sizes_and_directories(tmp_path: Path) -> None:
    files = {"saved_model.pb": 7, "variables/": 0, "variables/variables.index": 3, "assets/": 0,
             "assets/a/": 0, "assets/a/b.txt": 2}
    write(tmp_path / "1", files)
    assert LocalStorage().list_files(str(tmp_path / "1")) == files
    with pytest.raises(StorageError):
        LocalStorage().list_files(str(tmp_path / "2"))


def test_local_paths_are_used_in_place(tmp_path: Path) -> None:
    assert LocalStorage().local_path(str(tmp_path)) == str(tmp_path)
    assert LocalStorage().local_path(f"file://{tmp_path}") == str(tmp_path)
    assert isinstance(storage_for(str(tmp_path)), LocalStorage)
    assert isinstance(storage_for(f"file://{tmp_path}"), LocalStorage)


# --- fsspec storage (memory://) -------------------------------------------------------------------------


@pytest.fixture
def memory_base() -> str:
    base = f"memory://models-{uuid.uuid4().hex}/m"
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{base}/1/saved_model.pb", b"abc")
    fs.pipe(f"{base}/1/variables/variables.index", b"ix")
    fs.pipe(f"{base}/1/variables/variables.data-00000-of-00001", b"data")
    fs.pipe(f"{base}/0002/saved_model.pb", b"pb")
    fs.pipe(f"{base}/README", b"not a version")
    fs.pipe(f"{base}/tmp/saved_model.pb", b"pb")
    return base


def test_fsspec_lists_versions_and_files(memory_base: str) -> None:
    storage = storage_for(memory_base)
    assert isinstance(storage, FsspecStorage)
    listing = storage.list_versions(memory_base)
    assert listing.versions == {1: f"{memory_base}/1", 2: f"{memory_base}/0002"}
    assert storage.list_files(f"{memory_base}/1") == {
        "saved_model.pb": 3, "variables/": 0, "variables/variables.index": 2,
        "variables/variables.data-00000-of-00001": 4,
    }
    assert storage.local_path(memory_base) is None


def test_fsspec_sees_changes_between_listings(memory_base: str) -> None:
    storage = storage_for(memory_base)
    assert storage.list_versions(memory_base).versions.keys() == {1, 2}
    fsspec.filesystem("memory").pipe(f"{memory_base}/3/saved_model.pb", b"pb")
    assert storage.list_versions(memory_base).versions.keys() == {1, 2, 3}


def test_fsspec_listing_names_keras_files(memory_base: str) -> None:
    fsspec.filesystem("memory").pipe(f"{memory_base}/model.keras", b"zip")
    storage = storage_for(memory_base)
    assert storage.list_versions(memory_base).keras_files == (f"{memory_base}/model.keras",)
    keras = f"{memory_base}/model.keras"
    assert storage.list_versions(keras) == Listing({}, keras_files=(keras,))
    assert storage.list_versions(f"{memory_base}/README") == Listing({})


def test_fsspec_missing_base_path_and_unknown_schemes_are_storage_errors() -> None:
    with pytest.raises(StorageError, match="Could not find base path memory://nothing-here"):
        storage_for("memory://nothing-here").list_versions("memory://nothing-here")
    with pytest.raises(StorageError, match="Cannot open nosuchscheme://"):
        storage_for("nosuchscheme://x/y")


def test_fsspec_fetch_copies_the_listed_files(memory_base: str, tmp_path: Path) -> None:
    storage = storage_for(memory_base)
    files = storage.list_files(f"{memory_base}/1")
    storage.fetch(f"{memory_base}/1", files, str(tmp_path))
    assert LocalStorage().list_files(str(tmp_path)) == files
    assert (tmp_path / "variables" / "variables.data-00000-of-00001").read_bytes() == b"data"


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "/abs", "a//b"])
def test_fsspec_fetch_refuses_names_escaping_the_destination(memory_base: str, tmp_path: Path, name: str) -> None:
    with pytest.raises(StorageError, match="Refusing to fetch"):
        storage_for(memory_base).fetch(f"{memory_base}/1", {name: 1}, str(tmp_path / "dest"))
    assert not (tmp_path / "escape").exists()


def test_fsspec_fetch_checks_sizes(memory_base: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="has 3 bytes, the listing said 4"):
        storage_for(memory_base).fetch(f"{memory_base}/1", {"saved_model.pb": 4}, str(tmp_path))


# --- S3 settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, None),
        ({"S3_ENDPOINT": "minio:9000"}, "https://minio:9000"),
        ({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "0"}, "http://minio:9000"),
        ({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "false"}, "http://minio:9000"),
        ({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "1"}, "https://minio:9000"),
        ({"S3_ENDPOINT": "http://127.0.0.1:5000", "S3_USE_HTTPS": "1"}, "http://127.0.0.1:5000"),
    ],
)
def test_s3_endpoint_url(environ: dict[str, str], url: str | None) -> None:
    assert endpoint_url(environ) == url


def test_s3_options_for_an_s3_compatible_store() -> None:
    options = s3_options({
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI", "AWS_REGION": "eu-west-3",
        "S3_ENDPOINT": "ceph.local:7480", "S3_USE_HTTPS": "0", "S3_VERIFY_SSL": "0",
        "S3_CONNECT_TIMEOUT_MSEC": "2500",
    })
    assert options["key"] == "AKIDEXAMPLE"
    assert options["secret"] == "wJalrXUtnFEMI"
    assert "token" not in options
    assert options["client_kwargs"] == {
        "endpoint_url": "http://ceph.local:7480", "region_name": "eu-west-3", "verify": False
    }
    assert options["config_kwargs"]["s3"] == {"addressing_style": "path"}
    assert options["config_kwargs"]["connect_timeout"] == 2.5
    assert options["config_kwargs"]["read_timeout"] == 60.0


@pytest.mark.parametrize(
    ("environ", "region"),
    [
        ({}, None),
        ({"AWS_REGION": "eu-west-1", "S3_REGION": "x", "AWS_DEFAULT_REGION": "y"}, "eu-west-1"),
        ({"S3_REGION": "us-west-2"}, "us-west-2"),
        ({"AWS_DEFAULT_REGION": "ap-south-1"}, "ap-south-1"),
        ({"S3_ENDPOINT": "minio:9000"}, "us-east-1"),  # something to sign requests with
    ],
)
def test_s3_region(environ: dict[str, str], region: str | None) -> None:
    assert s3_options(environ)["client_kwargs"].get("region_name") == region


def test_s3_options_for_aws_default_chain() -> None:
    options = s3_options({"AWS_ACCESS_KEY_ID": "only-the-key"})
    assert "key" not in options  # half a credential: botocore's chain decides
    assert "secret" not in options
    assert "s3" not in options["config_kwargs"]  # AWS itself: default (virtual-host) addressing
    assert "verify" not in options["client_kwargs"]
    with_token = s3_options({"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t"})
    assert with_token["token"] == "t"


def test_s3_description_never_holds_secrets() -> None:
    environ = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI",
               "AWS_SESSION_TOKEN": "FwoGZXIvYXdzE", "S3_ENDPOINT": "minio:9000"}
    text = repr(describe(s3_options(environ)))
    assert not any(secret in text for secret in environ.values() if secret != "minio:9000")
    assert describe(s3_options(environ)) == {
        "endpoint": "https://minio:9000", "region": "us-east-1", "addressing_style": "path", "verify_ssl": True,
        "credentials": "environment",
    }


# --- local version cache --------------------------------------------------------------------------------


def test_cache_uses_local_paths_in_place_and_never_deletes_them(tmp_path: Path) -> None:
    write(tmp_path / "1", {"saved_model.pb": 3})
    cache = VersionCache(str(tmp_path / "cache"))
    assert cache.materialize(str(tmp_path / "1")) == str(tmp_path / "1")
    cache.evict(str(tmp_path / "1"))
    assert (tmp_path / "1" / "saved_model.pb").exists()
    assert cache.root is None  # nothing fetched, nothing created
    assert not (tmp_path / "cache").exists()


def test_cache_fetches_remote_versions_and_evicts_them(memory_base: str, tmp_path: Path) -> None:
    cache = VersionCache(str(tmp_path / "cache"))
    local = cache.materialize(f"{memory_base}/1")
    assert cache.root is not None
    assert local.startswith(cache.root + os.sep)
    assert Path(local, "variables", "variables.data-00000-of-00001").read_bytes() == b"data"
    assert os.listdir(cache.root) == [os.path.basename(local)]  # no partial directory left
    cache.evict(f"{memory_base}/1")
    assert not os.path.exists(local)
    cache.close()
    assert not (tmp_path / "cache").exists() or os.listdir(tmp_path / "cache") == []


def test_cache_counts_references_and_evicts_by_local_directory(memory_base: str, tmp_path: Path) -> None:
    cache = VersionCache(str(tmp_path))
    first = cache.materialize(f"{memory_base}/1")
    assert cache.materialize(f"{memory_base}/1") == first  # a second model on the same base path
    cache.evict(first)
    assert os.path.isdir(first)
    cache.evict(first)
    assert not os.path.exists(first)
    cache.evict(first)  # already gone: nothing happens
    second = cache.materialize(f"{memory_base}/1")
    assert second != first  # a fresh copy
    assert os.path.isdir(second)
    cache.close()
    assert not os.path.exists(second)


class BrokenStorage:
    """Lists one file, then fails half-way through fetching it."""

    def list_versions(self, base_path: str) -> Listing:
        return Listing({1: f"{base_path}/1"})

    def list_files(self, version_path: str) -> dict[str, int]:
        return {"saved_model.pb": 3, "variables/variables.index": 2}

    def local_path(self, path: str) -> str | None:
        return None

    def fetch(self, version_path: str, files: Files, destination: str) -> None:
        Path(destination, "saved_model.pb").write_bytes(b"abc")
        raise StorageError("connection reset")


def test_cache_failed_fetch_leaves_nothing_and_is_a_serving_error(tmp_path: Path) -> None:
    cache = VersionCache(str(tmp_path), storage=lambda path: BrokenStorage())
    with pytest.raises(ServingError) as info:
        cache.materialize("fake://bucket/m/1")
    assert info.value.code is Code.UNAVAILABLE
    assert "Could not fetch fake://bucket/m/1 to the local cache: connection reset" in info.value.message
    assert cache.root is not None
    assert os.listdir(cache.root) == []
    cache.close()


def test_cache_directory_from_the_environment(tmp_path: Path) -> None:
    cache = VersionCache.from_environ({"ASPIRED_CACHE_DIR": str(tmp_path / "models-cache")})
    fs = fsspec.filesystem("memory")
    base = f"memory://cache-env-{uuid.uuid4().hex}"
    fs.pipe(f"{base}/5/saved_model.pb", b"pb")
    local = cache.materialize(f"{base}/5")
    assert Path(local).parent.parent == tmp_path / "models-cache"
    cache.close()
    assert VersionCache.from_environ({}).root is None
