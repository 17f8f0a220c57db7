"""The transport between frontend worker processes and the model owner: tensors in shared memory, a small
header per message over a local socket.

An `Arena` is one shared-memory segment (a memfd, passed to the child as a file descriptor, so a crashed
process leaks nothing) used as a ring: the writing side allocates, writes an array, and names it in a header
(`ArrayRef`: dtype, shape, offset); the reading side maps the same bytes without copying. Allocations are
freed in any order; the ring's tail only moves past a freed prefix. Each direction has its own arena and
exactly one allocating process: frontend → owner for request feeds, owner → frontend for outputs.

Headers are small tuples framed by a 4-byte length and pickled; arrays never are.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import pickle
import struct
import tempfile
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from svc.errors import Code, ServingError

Array = np.ndarray[Any, Any]

ALIGN = 64
DEFAULT_ARENA_BYTES = 1 << 30  # virtual size; only pages written (the ring's high-water mark) use memory
_LENGTH = struct.Struct("!I")
_MAX_HEADER = 1 << 30


def create_segment(size: int) -> int:
    """An anonymous shared-memory file of `size` bytes; returns its descriptor (inheritable by children)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("svc-worker-ring", 0)
    else:  # pragma: no cover - non-Linux fallback: an unlinked temporary file
        fd, path = tempfile.mkstemp(prefix="svc-worker-ring-")
        os.unlink(path)
    os.ftruncate(fd, size)
    return fd


class Arena:
    """A ring of bytes in one shared segment. `alloc`/`free` are used by the one writing process only."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self._map = mmap.mmap(fd, self.size)
        self.buf = memoryview(self._map)
        self._live: deque[list[int]] = deque()  # [offset, size, freed] in allocation order
        self._by_offset: dict[int, list[int]] = {}
        self._head = 0
        self._space: asyncio.Event | None = None

    @property
    def in_use(self) -> int:
        return len(self._live)

    def alloc_nowait(self, size: int) -> int | None:
        """The offset of `size` free bytes, or None when the ring has no room for them now."""
        size = max(ALIGN, -(-size // ALIGN) * ALIGN)
        if size >= self.size:
            raise ServingError(
                Code.RESOURCE_EXHAUSTED,
                f"Tensor of {size} bytes is larger than the worker transport's shared memory ({self.size} bytes)",
            )
        if not self._live:
            self._head = 0
        else:
            tail = self._live[0][0]
            if self._head >= tail:
                if self.size - self._head < size:
                    if tail <= size:
                        return None
                    self._head = 0
            elif tail - self._head <= size:
                return None
        offset = self._head
        record = [offset, size, 0]
        self._live.append(record)
        self._by_offset[offset] = record
        self._head = offset + size
        return offset

    async def alloc(self, size: int) -> int:
        """Like `alloc_nowait`, waiting for frees when the ring is full."""
        while (offset := self.alloc_nowait(size)) is None:
            if self._space is None:
                self._space = asyncio.Event()
            await self._space.wait()
        return offset

    def free(self, offset: int) -> None:
        record = self._by_offset.pop(offset)
        record[2] = 1
        while self._live and self._live[0][2]:
            self._live.popleft()
        if self._space is not None:
            self._space.set()
            self._space = None

    def close(self) -> None:
        self.buf.release()
        self._map.close()
        os.close(self.fd)


class ArrayRef(NamedTuple):
    """Where an array lies in an arena. `kind` is "raw" (the array's own bytes) or "objects" (a byte-string
    array: int64 lengths, then the bytes); `dtype` is numpy's dtype string, or the dtype itself. A named
    tuple: it crosses the process boundary in every request and reply, and pickles in ~60% of a frozen
    dataclass's time."""

    kind: str
    dtype: str | np.dtype[Any]
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def _dtype_text(dtype: np.dtype[Any]) -> str | np.dtype[Any]:
    """numpy's dtype string (cheap to send) for numpy's own types, else the dtype itself: the string loses
    ml_dtypes' bfloat16/float8 types (`|V2`, `<f1`) and TF's quantized records."""
    return dtype.str if dtype.isbuiltin == 1 else dtype


def _dtype_of(text: str | np.dtype[Any]) -> np.dtype[Any]:
    return np.dtype(text)


def _object_bytes(array: Array) -> tuple[Array, list[bytes], bool]:
    items = [x.encode() if isinstance(x, str) else bytes(x) for x in array.reshape(-1)]
    texts = bool(array.size) and all(isinstance(x, str) for x in array.reshape(-1))
    return np.fromiter((len(x) for x in items), np.int64, len(items)), items, texts


async def write_arrays(arena: Arena, arrays: Sequence[Array]) -> list[ArrayRef]:
    """Copy arrays into the arena; the caller frees every returned offset once the reader is done."""
    refs: list[ArrayRef] = []
    try:
        for array in arrays:
            array = np.asarray(array)
            if array.dtype.kind == "O":
                lengths, items, texts = _object_bytes(array)
                nbytes = lengths.nbytes + int(lengths.sum())
                offset = await arena.alloc(nbytes)
                end = offset + lengths.nbytes
                arena.buf[offset:end] = lengths.tobytes()
                arena.buf[end:offset + nbytes] = b"".join(items)
                refs.append(ArrayRef("texts" if texts else "objects", "|O", array.shape, offset, nbytes))
                continue
            offset = await arena.alloc(array.nbytes)
            target: Array = np.ndarray(array.shape, array.dtype, arena.buf, offset)
            target[...] = array
            refs.append(ArrayRef("raw", _dtype_text(array.dtype), array.shape, offset, array.nbytes))
    except BaseException:
        for ref in refs:
            arena.free(ref.offset)
        raise
    return refs


def read_array(buf: memoryview, ref: ArrayRef, *, copy: bool) -> Array:
    """The array an `ArrayRef` names: a view into shared memory, or a private copy."""
    if ref.kind == "raw":
        view: Array = np.ndarray(ref.shape, _dtype_of(ref.dtype), buf, ref.offset)
        return view.copy() if copy else view
    count = int(np.prod(ref.shape, dtype=np.int64))
    lengths = np.frombuffer(buf, np.int64, count, ref.offset)
    out = np.empty(count, dtype=object)
    position = ref.offset + lengths.nbytes
    for i, length in enumerate(lengths.tolist()):
        item = bytes(buf[position:position + length])
        out[i] = item.decode() if ref.kind == "texts" else item
        position += length
    return out.reshape(ref.shape)


def read_feeds(buf: memoryview, refs: Mapping[str, ArrayRef]) -> dict[str, Array]:
    return {name: read_array(buf, ref, copy=False) for name, ref in refs.items()}


class Channel:
    """Framed headers over one stream connection (a socketpair end)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._outgoing: list[bytes] = []

    @classmethod
    async def open(cls, sock: Any) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer)

    def send(self, message: tuple[Any, ...]) -> None:
        """Queue one message (non-blocking). Messages queued in one turn of the event loop leave in one
        write: under load that is one system call and one wake-up of the peer for many requests."""
        if self._writer.is_closing():
            return
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._write)
        self._outgoing += (_LENGTH.pack(len(data)), data)

    def _write(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if not self._writer.is_closing():
            self._writer.write(b"".join(outgoing))

    async def flush(self) -> None:
        self._write()
        await self._writer.drain()

    async def receive(self) -> tuple[Any, ...] | None:
        """The next message, or None once the peer has closed its end."""
        try:
            head = await self._reader.readexactly(_LENGTH.size)
            (length,) = _LENGTH.unpack(head)
            if length > _MAX_HEADER:
                raise ConnectionError(f"worker header of {length} bytes")
            message: tuple[Any, ...] = pickle.loads(await self._reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return message

    def close(self) -> None:
        self._write()
        self._writer.close()
