"""Writes of one event-loop turn leaving in one system call, for both frontends (issue 11).

grpclib writes a unary response as three `transport.write` calls (HEADERS, DATA, trailers) and hypercorn an
HTTP/1.1 response as two or three (head, body, end), each a `send` system call and, on the client, a wake-up:
~12% of a gRPC frontend's CPU under load, ~5% of a REST one's. `CoalescingTransport` collects the writes and
sends them together at the end of the turn (`call_soon`), in order; `close` and `write_eof` send what is
pending first, `abort` drops it. Everything else is the wrapped transport's, so flow control (`drain`) still
sees the socket's own buffer.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingTransport:
    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data) if not isinstance(data, bytes) else data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return int(self._transport.get_write_buffer_size()) + sum(len(p) for p in self._pending)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def coalesce_stream_writes(writer: asyncio.StreamWriter) -> None:
    """Make an asyncio stream writer's writes coalesce (hypercorn's connections); idempotent."""
    transport = writer.transport
    if not isinstance(transport, CoalescingTransport):
        writer._transport = CoalescingTransport(transport, asyncio.get_running_loop())  # type: ignore[attr-defined]
