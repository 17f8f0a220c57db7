"""Listing a model's base path: which numeric version directories exist.

Mirrors the listing half of TF Serving's `FileSystemStoragePathSource`: children whose names parse as a
non-negative int64 (leading zeros allowed) are versions, anything else is ignored. Blocking: callers run it
in a thread. Local paths here; other URL schemes go through the `Storage` protocol.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Protocol

_NUMERIC = re.compile(r"\+?[0-9]+")
_INT64_MAX = 2**63 - 1


class StorageError(Exception):
    """The storage did not answer (missing base path, permission, network): the listing is unknown."""


@dataclass(frozen=True, slots=True)
class Listing:
    versions: dict[int, str]  # version -> path of its directory
    duplicates: tuple[str, ...] = ()  # names that parsed to an already seen number (TF warns)


class Storage(Protocol):
    def list_versions(self, base_path: str) -> Listing: ...


def parse_version(name: str) -> int | None:
    if not _NUMERIC.fullmatch(name):
        return None
    value = int(name)
    return value if value <= _INT64_MAX else None


class LocalStorage:
    """Local (and mounted) file systems."""

    def list_versions(self, base_path: str) -> Listing:
        path = base_path.removeprefix("file://")
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            raise StorageError(
                f"Could not find base path {base_path} for servable with error {exc.strerror or exc}"
            ) from exc
        versions: dict[int, str] = {}
        duplicates: list[str] = []
        for entry in entries:
            version = parse_version(entry.name)
            if version is None or not entry.is_dir():
                continue
            if version in versions:
                duplicates.append(entry.name)
                continue
            versions[version] = entry.path
        return Listing(versions, tuple(duplicates))


def storage_for(base_path: str) -> Storage:
    if "://" not in base_path or base_path.startswith("file://"):
        return LocalStorage()
    raise StorageError(f"Unsupported storage scheme in base path {base_path}")
