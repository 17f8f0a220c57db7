"""Storage: a model's version directories, their files, and fetching them — local paths and fsspec URLs.

Mirrors the listing half of TF Serving's `sources/storage_path/file_system_storage_path_source.cc`: children of
a base path whose names parse as a non-negative int64 (leading zeros allowed, `00000123` -> 123) are versions,
anything else is ignored, and when two names parse to the same number the first by name wins (TF warns).

One `Storage` protocol, two implementations:
- `LocalStorage`: plain and `file://` paths (mounted volumes included), read with `os.scandir`.
- `FsspecStorage`: any other URL fsspec knows (`s3://`, `gs://`, `memory://`, ...). S3 settings come from the
  environment TF Serving users already set (`svc/sources/s3.py`); other schemes use their fsspec package's defaults
  (`gs://` needs `gcsfs` installed). Listings bypass fsspec's listing cache, so every poll sees the store.

Every method blocks: callers run them in a thread. Expected failures (missing path, permission, network) raise
`StorageError`; the poller treats them as *unknown*, never as *deleted*.

A version's files are a mapping of relative POSIX names to sizes; directories appear as `name/` with size 0
(empty local directories and S3 "folder" markers alike), so creating a directory changes the listing.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from svc.logging import get_logger
from svc.sources.publication import KERAS_SUFFIXES, keras_files
from svc.types import INT64_MAX

log = get_logger(actor="storage")

_NUMERIC = re.compile(r"\+?[0-9]+")
_MAX_DEPTH = 32  # symlink loops inside a version directory end here instead of forever

Files = Mapping[str, int]


class StorageError(Exception):
    """The storage did not answer (missing base path, permission, network): the listing is unknown."""


@dataclass(frozen=True, slots=True)
class Listing:
    versions: dict[int, str]  # version -> path of its directory
    duplicates: tuple[str, ...] = ()  # names that parsed to an already seen number (TF warns)
    keras_files: tuple[str, ...] = ()  # paths of Keras model files at the base path (refused, logged)


class Storage(Protocol):
    def list_versions(self, base_path: str) -> Listing:
        """The numeric child directories of `base_path`; `StorageError` when it cannot be listed."""
        ...

    def list_files(self, version_path: str) -> dict[str, int]:
        """Every file under `version_path` (recursively) as relative name -> size; directories as `name/`."""
        ...

    def local_path(self, path: str) -> str | None:
        """`path` as a directory of this machine, or None when it must be fetched first."""
        ...

    def fetch(self, version_path: str, files: Files, destination: str) -> None:
        """Copy the listed `files` of `version_path` into the existing local directory `destination`."""
        ...


def parse_version(name: str) -> int | None:
    """TF Serving's version number of a child name (absl::SimpleAtoi into int64), or None."""
    if not _NUMERIC.fullmatch(name):
        return None
    value = int(name)
    return value if value <= INT64_MAX else None


def versions_from(children: Iterable[tuple[str, str]]) -> Listing:
    """The Listing of child directories given as (name, path); non-numeric names are ignored."""
    versions: dict[int, str] = {}
    duplicates: list[str] = []
    for name, path in sorted(children):
        version = parse_version(name)
        if version is None:
            continue
        if version in versions:
            duplicates.append(name)
            continue
        versions[version] = path
    return Listing(versions, tuple(duplicates))


def join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def checked_destination(destination: str, name: str) -> str:
    """Where file `name` of a listing goes under `destination`; a name escaping it is refused."""
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise StorageError(f"Refusing to fetch a file named {name!r}")
    return os.path.join(destination, *parts)


class LocalStorage:
    """Local (and mounted) file systems."""

    def list_versions(self, base_path: str) -> Listing:
        path = _local(base_path)
        if path.lower().endswith(KERAS_SUFFIXES) and os.path.isfile(path):
            return Listing({}, keras_files=(base_path,))  # a base path naming a Keras file
        try:
            with os.scandir(path) as it:
                entries = [(e.name, e.path, e.is_dir()) for e in it]
        except OSError as exc:
            raise StorageError(
                f"Could not find base path {base_path} with error {exc.strerror or exc}"
            ) from exc
        listing = versions_from((name, child) for name, child, is_dir in entries if is_dir)
        keras = keras_files(name for name, _, is_dir in entries if not is_dir)
        return replace(listing, keras_files=tuple(join(base_path, name) for name in keras))

    def list_files(self, version_path: str) -> dict[str, int]:
        files: dict[str, int] = {}
        stack = [("", _local(version_path), 0)]
        try:
            while stack:
                prefix, directory, depth = stack.pop()
                if depth > _MAX_DEPTH:
                    raise StorageError(f"Directories nested too deep under {version_path}")
                with os.scandir(directory) as it:
                    for entry in it:
                        name = prefix + entry.name
                        if entry.is_dir():
                            files[name + "/"] = 0
                            stack.append((name + "/", entry.path, depth + 1))
                        else:
                            files[name] = entry.stat().st_size
        except OSError as exc:
            raise StorageError(f"Could not list {version_path}: {exc.strerror or exc}") from exc
        return files

    def local_path(self, path: str) -> str | None:
        return _local(path)

    def fetch(self, version_path: str, files: Files, destination: str) -> None:
        raise StorageError(f"{version_path} is local; nothing to fetch")


class FsspecStorage:
    """Any fsspec file system: `protocol` is its URL scheme, `options` its constructor arguments.

    Every exception the file system's library raises becomes a `StorageError`: network libraries raise many
    unrelated types (botocore, aiohttp, OSError), and at this boundary any of them means "unknown".
    """

    def __init__(self, protocol: str, options: Mapping[str, Any] | None = None) -> None:
        import fsspec

        self.protocol = protocol
        try:
            self._fs = fsspec.filesystem(protocol, **dict(options or {}))
        except (ImportError, ValueError) as exc:
            raise StorageError(f"Cannot open {protocol}:// paths: {exc}") from exc

    def _strip(self, path: str) -> str:
        return str(self._fs._strip_protocol(path)).rstrip("/")

    def list_versions(self, base_path: str) -> Listing:
        root = self._strip(base_path)
        try:
            self._fs.invalidate_cache(root)
            entries = self._fs.ls(root, detail=True)
        except Exception as exc:
            raise StorageError(
                f"Could not find base path {base_path} with error {_describe(exc)}"
            ) from exc
        children = []
        files = []
        for entry in entries:
            name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            if entry.get("type") == "directory":
                children.append((name, join(base_path, name)))
            elif str(entry["name"]).rstrip("/") == root:  # the base path is itself a file
                return Listing({}, keras_files=(base_path,) if keras_files([name]) else ())
            else:
                files.append(name)
        listing = versions_from(children)
        return replace(listing, keras_files=tuple(join(base_path, name) for name in keras_files(files)))

    def list_files(self, version_path: str) -> dict[str, int]:
        root = self._strip(version_path)
        try:
            self._fs.invalidate_cache(root)
            found = self._fs.find(root, detail=True, withdirs=True)
        except Exception as exc:
            raise StorageError(f"Could not list {version_path}: {_describe(exc)}") from exc
        files: dict[str, int] = {}
        for key, info in found.items():
            name = str(info.get("name", key))
            if not name.startswith(root + "/"):
                continue
            relative = name[len(root) + 1 :]
            if not relative:
                continue
            if info.get("type") == "directory" or relative.endswith("/"):
                files[relative.rstrip("/") + "/"] = 0
            else:
                files[relative] = int(info.get("size") or 0)
        return files

    def local_path(self, path: str) -> str | None:
        return None

    def fetch(self, version_path: str, files: Files, destination: str) -> None:
        root = self._strip(version_path)
        remote: list[str] = []
        local: list[str] = []
        for name in sorted(files):
            target = checked_destination(destination, name.rstrip("/"))
            if name.endswith("/"):
                os.makedirs(target, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            remote.append(f"{root}/{name}")
            local.append(target)
        try:
            if remote:
                self._fs.get(remote, local)
        except Exception as exc:
            raise StorageError(f"Could not fetch {version_path}: {_describe(exc)}") from exc
        for name, target in zip(remote, local, strict=True):
            expected = files[name[len(root) + 1 :]]
            try:
                size = os.path.getsize(target)
            except OSError as exc:
                raise StorageError(f"Could not fetch {name}: {exc.strerror or exc}") from exc
            if size != expected:
                raise StorageError(f"Fetched {name} has {size} bytes, the listing said {expected}")


def _local(path: str) -> str:
    return path.removeprefix("file://")


def _describe(exc: BaseException) -> str:
    """A one-line error text for logs: the exception's type and message (never its arguments' objects)."""
    return f"{type(exc).__name__}: {exc}"


def scheme(path: str) -> str:
    """The URL scheme of a base path; "" for plain local paths."""
    head, sep, _ = path.partition("://")
    return head.lower() if sep and "/" not in head else ""


@functools.cache
def _fsspec_storage(protocol: str) -> FsspecStorage:
    if protocol in ("s3", "s3a"):
        from svc.sources.s3 import describe, s3_options

        options = s3_options(os.environ)
        storage = FsspecStorage("s3", options)
        log.info("storage_opened", scheme=protocol, **describe(options))
        return storage
    storage = FsspecStorage(protocol)
    log.info("storage_opened", scheme=protocol)
    return storage


def storage_for(path: str) -> Storage:
    """The Storage that reads `path`: local for plain and `file://` paths, fsspec for other URLs."""
    protocol = scheme(path)
    if protocol in ("", "file"):
        return LocalStorage()
    return _fsspec_storage(protocol)
