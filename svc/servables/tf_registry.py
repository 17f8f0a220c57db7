"""TensorFlow's own metric registry, for the Prometheus page (TF Serving's `util/prometheus_exporter.cc` exports
every metric of TF's `CollectionRegistry`: `:tensorflow:core:direct_session_runs`, `graph_build_calls`,
`graph_optimization_usecs`, `:tensorflow:cc:saved_model:*`, ...).

TensorFlow's Python API has no reader for that registry, but the wheel ships its C++ headers and exports
`CollectionRegistry::CollectMetrics`. `tf_registry.cc` (beside this file) flattens the collected metrics; it is
compiled once per TensorFlow version against the installed headers (about 3 s, in a thread, never on the
request path) into a per-user cache directory and called through ctypes. Without a C++ compiler the page keeps
aspired's own series and `tf_registry_unavailable` is logged once with the reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

from svc.logging import get_logger
from svc.metrics import TfFamily, TfPoint

log = get_logger(actor="tf_registry")

SOURCE = Path(__file__).with_name("tf_registry.cc")
COMPILE_TIMEOUT_S = 300.0

_RECORD, _FIELD = "\x1e", "\x1f"


def parse(text: str) -> list[TfFamily]:
    """The flattened registry (`tf_registry.cc`'s output) as families, in the registry's (name) order."""
    families: list[TfFamily] = []
    current: tuple[str, bool, str] | None = None
    points: list[TfPoint] = []

    def close() -> None:
        if current is not None:
            families.append(TfFamily(current[0], current[1], current[2], tuple(points)))

    for record in text.split(_RECORD)[1:]:
        kind, *fields = record.split(_FIELD)
        if kind == "M":
            close()
            current, points = (fields[0], fields[1] == "1", fields[2]), []
        elif kind == "P" and current is not None:
            points.append(_point(current[2], fields))
    close()
    return families


def _point(value_type: str, fields: list[str]) -> TfPoint:
    histogram = None
    if value_type == "h":
        count = int(fields[1])
        pairs = fields[2 : 2 + 2 * count]
        buckets = tuple((float(pairs[i]), float(pairs[i + 1])) for i in range(0, len(pairs), 2))
        histogram, value, rest = (float(fields[0]), buckets), "0", fields[2 + 2 * count :]
    else:
        value, rest = fields[0], fields[1:]
    n = int(rest[0])
    labels = tuple((rest[1 + 2 * i], rest[2 + 2 * i]) for i in range(n))
    return TfPoint(labels, value, histogram)


class TfRegistry:
    """The compiled reader, loaded; `collect()` may be called from any thread."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._collect = library.aspired_tf_registry_collect
        self._collect.argtypes = [ctypes.POINTER(ctypes.c_size_t)]
        self._collect.restype = ctypes.c_void_p
        self._free = library.aspired_tf_registry_free
        self._free.argtypes = [ctypes.c_void_p]
        self._free.restype = None

    def collect(self) -> list[TfFamily]:
        size = ctypes.c_size_t(0)
        pointer = self._collect(ctypes.byref(size))
        if not pointer:
            return []
        try:
            data = ctypes.string_at(pointer, size.value)
        finally:
            self._free(pointer)
        return parse(data.decode("utf-8", errors="replace"))


def cache_dir() -> Path:
    """`$ASPIRED_BUILD_CACHE_DIR`, else `$XDG_CACHE_HOME/aspired`, else `~/.cache/aspired`."""
    if explicit := os.environ.get("ASPIRED_BUILD_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aspired"


def load(directory: Path | None = None) -> TfRegistry | None:
    """The reader, compiled first if this TensorFlow has no cached build; None (logged once) when it cannot be
    built or loaded. Blocking: call it from a thread."""
    try:
        return TfRegistry(ctypes.CDLL(str(_build(directory or cache_dir()))))
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        log.warning("tf_registry_unavailable", reason=f"{type(exc).__name__}: {exc}"[:2000])
        return None


_shared: list[TfRegistry | None] = []
_shared_lock = threading.Lock()


def shared() -> TfRegistry | None:
    """The process's one reader (built or found in the cache at the first call, logged once if it cannot be)."""
    with _shared_lock:
        if not _shared:
            _shared.append(load())
        return _shared[0]


def _flags() -> tuple[list[str], list[str], str]:
    import tensorflow as tf

    return list(tf.sysconfig.get_compile_flags()), list(tf.sysconfig.get_link_flags()), tf.__version__


def _build(directory: Path) -> Path:
    compile_flags, link_flags, version = _flags()
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(
        b"\0".join([source, version.encode(), *(f.encode() for f in compile_flags + link_flags)])
    ).hexdigest()[:16]
    target = directory / f"tf_registry-{version}-{digest}.so"
    if _trusted(target):
        return target
    if compiler is None:
        raise RuntimeError("no C++ compiler (set CXX, or install g++) to build TF's metric registry reader")
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError:
        directory = Path(tempfile.mkdtemp(prefix="aspired-"))
        target = directory / target.name
    fd, partial = tempfile.mkstemp(prefix=".tf_registry-", suffix=".so", dir=directory)
    os.close(fd)
    try:
        command = [
            compiler, "-std=c++17", "-shared", "-fPIC", "-O2", "-w", *compile_flags,
            str(SOURCE), "-o", partial, *link_flags,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
        os.chmod(partial, 0o755)
        os.replace(partial, target)  # atomic: a concurrent start sees the whole file or none
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    log.info("tf_registry_built", path=str(target), tensorflow=version)
    return target


def _trusted(path: Path) -> bool:
    """A cached build owned by this user or root (an image's build) that nobody else can write: it is loaded
    into the process."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return False
    return info.st_uid in (0, os.getuid()) and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
