"""Bounds on how long a client may take over what it has started to send, below the request handlers (issue
10: 120 slow HTTP requests and 40 unfinished gRPC messages held for 20 s were all still open, and held the
drain). The handlers bound a started REST body or gRPC message (`--request_read_timeout_seconds`); this
module bounds what comes before a handler exists, with the same flag:

- REST (hypercorn): a request head (request line and headers, from its first byte) must be complete within
  the timeout, else the client is answered 408 and the connection is closed; on HTTP/2 (h2c) a frame that has
  started must be complete within it, else the connection is closed. Connections with nothing started stay
  open until hypercorn's keep-alive timeout. hypercorn has no such bound: its `read_timeout` limits every
  read, including the silence while a request runs, and its keep-alive timeout (75 s here) was all that cut
  off a slow head. It has no hook for the protocol either: its TCPServer looks `ProtocolWrapper` up in its
  module for each connection, so `install` puts a subclass there, which acts only for a Config that carries
  `request_head_timeout` and is otherwise hypercorn's own.
- gRPC (grpclib): the client's HTTP/2 preface and first SETTINGS frame must arrive within the timeout of
  the connection opening (gRPC core closes such a connection after its 120 s handshake timeout), and any
  frame that has started within it of its first byte, else the connection is closed (`svc.frontends.
  grpc_server`, with `h2_incomplete` from here).

TF Serving bounds none of the REST side (its HTTP server has no request timeout).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from h2.connection import H2Connection
from hypercorn.asyncio import tcp_server
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H11Protocol

from svc.frontends.write_coalescing import coalesce_stream_writes
from svc.logging import get_logger
from svc.wire.json_tensor import format_error

log = get_logger(frontend="rest")

HEAD_TIMEOUT_ATTRIBUTE = "request_head_timeout"  # seconds, on the hypercorn Config


def h2_incomplete(conn: H2Connection) -> bool:
    """Whether `conn` holds the start of something the client has not finished: part of the client preface,
    part of a frame, or a header block still waiting for its CONTINUATION frames."""
    buffer = conn.incoming_buffer
    preface_started = 0 < buffer._preamble_len < 24
    return preface_started or bool(buffer._data) or bool(buffer._headers_buffer)


def _head_pending(protocol: H11Protocol | H2Protocol) -> tuple[bool, int]:
    """(something started and unfinished, which request it belongs to): for HTTP/1.1 the bytes of a request
    head before its end, numbered by the connection's request count; for HTTP/2 a started frame."""
    if isinstance(protocol, H11Protocol):
        conn = protocol.connection
        if not isinstance(conn, h11.Connection):  # a WebSocket: not ours
            return False, 0
        return conn.their_state is h11.IDLE and bool(conn.trailing_data[0]), protocol.keep_alive_requests
    return h2_incomplete(protocol.connection), 0


def _timeout_response(seconds: float) -> bytes:
    body = format_error(f"Request headers not received within {seconds:g} s")
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


class HeadTimedProtocol(ProtocolWrapper):
    """hypercorn's per-connection protocol, plus the request-head bound, coalesced writes and a cheaper
    keep-alive bound (`KeepAlive`). Checked after each read (hypercorn
    feeds the parser there); a read whose handling waits on the application (a full body queue) cannot
    cut a request short: the bound is checked again when it fires."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timeout: float | None = getattr(self.config, HEAD_TIMEOUT_ATTRIBUTE, None)
        self._timer: asyncio.TimerHandle | None = None
        self._timed_request = 0
        self._closing: asyncio.Task[None] | None = None
        server: Any = getattr(self.send, "__self__", None)  # hypercorn's TCPServer
        writer = getattr(server, "writer", None)
        if isinstance(writer, asyncio.StreamWriter):
            coalesce_stream_writes(writer)  # a response's head and body in one send (issue 11)
            if hasattr(server, "idle_task"):
                server.idle_task = KeepAlive(server)

    async def handle(self, event: Event) -> None:
        await super().handle(event)
        if self._timeout is None:
            return
        pending, request = _head_pending(self.protocol)
        if isinstance(event, RawData) and pending:
            if self._timer is None or request != self._timed_request:
                self._arm(request)
        else:
            self._disarm()

    def _arm(self, request: int) -> None:
        assert self._timeout is not None
        self._disarm()
        self._timed_request = request
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        pending, request = _head_pending(self.protocol)
        if not pending:
            return
        if request != self._timed_request:  # a later request's head: its own time
            self._arm(request)
            return
        self._closing = asyncio.get_running_loop().create_task(self._close_slow())

    async def _close_slow(self) -> None:
        assert self._timeout is not None
        http1 = isinstance(self.protocol, H11Protocol)
        log.info("request_head_timed_out", seconds=self._timeout, http="1.1" if http1 else "2",
                 message=f"request head not received within {self._timeout:g} s; connection closed")
        if http1:
            await self.send(RawData(_timeout_response(self._timeout)))
        await self.send(Closed())


class KeepAlive:
    """hypercorn's bound on an idle connection (`keep_alive_timeout`; closed at once when the server shuts
    down), as one timer and one task for the connection's life. hypercorn's own (`AsyncioSingleTask` running
    `TCPServer._idle_timeout`) starts a task, which starts another through `asyncio.wait_for`, each time the
    connection goes idle and cancels and awaits it when the next request comes: ~4 % of a small REST
    request's CPU (issue 11). hypercorn calls `restart` when the connection goes idle and `stop` when a
    request starts and when the connection ends."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self._idle = False
        self._timer: asyncio.TimerHandle | None = None
        self._watch: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    async def restart(self, task_group: Any, action: Any) -> None:
        self._idle = True
        self._cancel_timer()
        loop = asyncio.get_running_loop()
        if self._server.context.terminated.is_set():
            self._close()
            return
        self._timer = loop.call_later(self._server.config.keep_alive_timeout, self._close)
        if self._watch is None:
            self._watch = loop.create_task(self._close_on_shutdown())

    async def stop(self) -> None:
        self._idle = False
        self._cancel_timer()
        if self._server.writer.is_closing() and self._watch is not None:  # the connection has ended
            self._watch.cancel()
            self._watch = None

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _close_on_shutdown(self) -> None:
        await self._server.context.terminated.wait()
        if self._idle:
            self._close()

    def _close(self) -> None:
        self._timer = None
        if self._closing is None:  # not cancelled with the connection's tasks: hypercorn shields it too
            self._closing = asyncio.get_running_loop().create_task(self._server._initiate_server_close())


def install() -> None:
    """Make hypercorn's TCPServer build `HeadTimedProtocol` for its connections (idempotent; without
    `request_head_timeout` on the Config it behaves as hypercorn's own class)."""
    tcp_server.ProtocolWrapper = HeadTimedProtocol  # type: ignore[attr-defined]


def bound_request_heads(config: Any, seconds: float) -> None:
    """Apply the request-head bound to a hypercorn Config."""
    install()
    setattr(config, HEAD_TIMEOUT_ATTRIBUTE, seconds)
