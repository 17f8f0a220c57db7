"""VersionCache: local copies of versions that live on remote storage (`s3://`, `gs://`, ...), for loading.

TensorFlow loads a SavedModel from a local directory, so before a remote version loads, `materialize` copies it
into the cache and returns the local directory; for a local path it returns the path itself and copies nothing.
A copy is atomic: files go to a `.partial-*` directory that is renamed into place once every file is there with
the size the listing announced, so a failed or interrupted fetch never leaves a directory that looks loadable.
`evict` is called when the version unloads (or its load failed) and deletes the copy; it accepts the remote path
or the local directory `materialize` returned, counts references (two models may share a base path) and never
touches anything it did not create.

Where: a directory per server process, `aspired-<random>`, created on the first remote fetch inside
`$ASPIRED_CACHE_DIR` when that variable is set (a volume with room for the models being loaded) and inside the
system temporary directory (`$TMPDIR`, else /tmp) otherwise; it is removed when the process exits normally.
Blocking: callers run these methods in threads.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from svc.errors import Code, ServingError
from svc.logging import get_logger
from svc.sources.storage import Storage, StorageError, storage_for

log = get_logger(actor="version_cache")

CACHE_DIR_VARIABLE = "ASPIRED_CACHE_DIR"


@dataclass(slots=True)
class _Entry:
    local: str
    refs: int = 0
    ready: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class VersionCache:
    def __init__(self, parent: str | None = None, storage: Callable[[str], Storage] = storage_for) -> None:
        """`parent`: where the per-process cache directory is created (None: the system temporary directory)."""
        self._parent = parent
        self._storage = storage
        self._root: str | None = None
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}  # remote path -> entry
        self._remote_of: dict[str, str] = {}  # local directory -> remote path
        self._copies = itertools.count(1)  # a fresh name per copy: deleting an old copy never races a new one

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> VersionCache:
        return cls(environ.get(CACHE_DIR_VARIABLE) or None)

    @property
    def root(self) -> str | None:
        """The per-process cache directory, once a remote version was fetched."""
        return self._root

    def materialize(self, path: str) -> str:
        """A local directory holding version `path`; fetched first when `path` is remote. Raises ServingError
        (UNAVAILABLE) when the fetch fails; a failed fetch leaves nothing behind."""
        try:
            storage = self._storage(path)
        except StorageError as exc:
            raise ServingError(Code.UNAVAILABLE, str(exc)) from exc
        local = storage.local_path(path)
        if local is not None:
            return local
        with self._lock:
            entry = self._entries.get(path)
            if entry is None:
                entry = self._entries[path] = _Entry(self._local_dir(path))
                self._remote_of[entry.local] = path
            entry.refs += 1
        try:
            with entry.lock:
                if not entry.ready:
                    self._fetch(storage, path, entry.local)
                    entry.ready = True
        except BaseException:
            self._release(path)
            raise
        return entry.local

    def evict(self, path: str) -> None:
        """Drop one reference to version `path` (remote path or the local copy); delete the copy at zero."""
        with self._lock:
            remote = path if path in self._entries else self._remote_of.get(path)
        if remote is not None:
            self._release(remote)

    def close(self) -> None:
        """Delete every copy and the per-process directory."""
        with self._lock:
            root, self._root = self._root, None
            self._entries.clear()
            self._remote_of.clear()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    def _release(self, remote: str) -> None:
        with self._lock:
            entry = self._entries.get(remote)
            if entry is None:
                return
            entry.refs -= 1
            if entry.refs > 0:
                return
            del self._entries[remote]
            self._remote_of.pop(entry.local, None)
        with entry.lock:
            shutil.rmtree(entry.local, ignore_errors=True)
        log.info("version_cache_evicted", path=remote, local=entry.local)

    def _local_dir(self, path: str) -> str:
        if self._root is None:
            if self._parent:
                os.makedirs(self._parent, exist_ok=True)
            self._root = tempfile.mkdtemp(prefix="aspired-", dir=self._parent)
            atexit.register(self.close)
        digest = hashlib.sha256(path.encode()).hexdigest()[:16]
        name = path.rstrip("/").rsplit("/", 1)[-1]
        return os.path.join(self._root, f"{digest}-{next(self._copies)}-{name}")

    def _fetch(self, storage: Storage, path: str, local: str) -> None:
        root = os.path.dirname(local)
        partial = tempfile.mkdtemp(prefix=".partial-", dir=root)
        try:
            files = storage.list_files(path)
            storage.fetch(path, files, partial)
            shutil.rmtree(local, ignore_errors=True)
            os.rename(partial, local)
        except StorageError as exc:
            raise ServingError(Code.UNAVAILABLE, f"Could not fetch {path} to the local cache: {exc}") from exc
        except OSError as exc:
            raise ServingError(
                Code.UNAVAILABLE, f"Could not write {path} to the local cache {root}: {exc.strerror or exc}"
            ) from exc
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        size = sum(files.values())
        log.info("version_cache_fetched", path=path, local=local, files=len(files), bytes=size)
