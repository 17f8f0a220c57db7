"""Publish a SavedModel version the way a polling server wants it: written under a hidden staging name beside
`base/N` (same file system) and renamed into place, so the version directory appears complete or not at all."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def publish_version(base: Path, version: int, write: Callable[[Path], None]) -> Path:
    """`write(directory)` exports into a directory that must not exist yet; returns `base/version`.
    Refuses to replace an existing version."""
    target = base / str(version)
    if target.exists():
        raise SystemExit(f"{target} already exists; versions are immutable, pick another --model_version")
    base.mkdir(parents=True, exist_ok=True)
    # The leading dot and the non-numeric name keep version pollers from taking it for a version.
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.staging-", dir=base))
    try:
        write(staging / "export")
        (staging / "export").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
