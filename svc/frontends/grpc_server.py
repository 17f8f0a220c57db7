"""`--grpc_channel_arguments` applied to grpclib's server (TF Serving hands them to `grpc::ServerBuilder`).

What grpclib can honour is applied: `grpc.max_connection_age_ms` (a GOAWAY once a connection is that old,
so clients reconnect and spread over replicas, with grpc core's +/-10% jitter) and
`grpc.max_connection_age_grace_ms` (then the connection is closed), keepalive pings
(`grpc.keepalive_time_ms`, `grpc.keepalive_timeout_ms`, `grpc.keepalive_permit_without_calls`,
`grpc.http2.max_pings_without_data`, `grpc.http2.min_time_between_pings_ms`), `grpc.max_concurrent_streams`
(HTTP/2 SETTINGS, 1000 by default; a call beyond it is refused with REFUSED_STREAM), and message sizes (`grpc.max_receive_message_length` bounds requests with
`--max_request_bytes`, `grpc.max_send_message_length` bounds responses). Every other argument is logged
once at start-up as `grpc_channel_argument_ignored`: nothing is silently ignored (issue 10).
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from grpclib.config import Configuration
from grpclib.protocol import Connection, EventsProcessor, H2Protocol
from grpclib.server import Handler, Server
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import RequestReceived, SettingsAcknowledged
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from svc.errors import invalid_argument
from svc.frontends.read_timeouts import h2_incomplete
from svc.frontends.write_coalescing import CoalescingTransport
from svc.logging import get_logger

log = get_logger(frontend="grpc")

_KEEPALIVE: dict[str, tuple[str, float]] = {  # argument -> (grpclib Configuration field, scale)
    "grpc.keepalive_time_ms": ("_keepalive_time", 1e-3),
    "grpc.keepalive_timeout_ms": ("_keepalive_timeout", 1e-3),
    "grpc.keepalive_permit_without_calls": ("_keepalive_permit_without_calls", 1),
    "grpc.http2.max_pings_without_data": ("_http2_max_pings_without_data", 1),
    "grpc.http2.min_time_between_pings_ms": ("_http2_min_sent_ping_interval_without_data", 1e-3),
}
_INT32_MAX = 2**31 - 1
# gRPC core advertises no limit; h2 (under grpclib) 100. 1000 bounds the calls one connection can hold
# without making a client that multiplexes many calls on one channel wait (clients queue calls above it).
DEFAULT_MAX_CONCURRENT_STREAMS = 1000
_INITIAL_WINDOW = 65535  # an HTTP/2 connection's flow-control window before any WINDOW_UPDATE (RFC 9113 6.9.2)
_HANDSHAKE_BYTES = 24 + 9  # the client preface and the header of its first frame (SETTINGS)


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """The server-side meaning of `--grpc_channel_arguments`."""

    max_connection_age: float | None = None  # seconds
    max_connection_age_grace: float | None = None  # seconds; None: wait for the calls in flight
    max_concurrent_streams: int | None = None  # None: no limit (grpc.max_concurrent_streams=-1)
    max_receive_message_length: int | None = None
    max_send_message_length: int | None = None
    configuration: Configuration = field(default_factory=Configuration)
    ignored: tuple[str, ...] = ()


def channel_settings(arguments: Sequence[tuple[str, int | str]]) -> ChannelSettings:
    """Map `opts.grpc_channel_arguments(options)` onto what grpclib can do (pure). Raises ServingError
    INVALID_ARGUMENT for a value grpclib refuses (a keepalive time that is not positive, ...)."""
    values: dict[str, Any] = {}
    configuration: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in arguments:
        if key in _KEEPALIVE and isinstance(value, int):
            name, scale = _KEEPALIVE[key]
            configuration[name] = bool(value) if name == "_keepalive_permit_without_calls" else value * scale
        elif key in ("grpc.max_connection_age_ms", "grpc.max_connection_age_grace_ms") and isinstance(value, int):
            # grpc core: INT_MAX means "never"
            values[key] = None if value >= _INT32_MAX else max(value, 0) / 1000
        elif key in ("grpc.max_concurrent_streams", "grpc.max_receive_message_length",
                     "grpc.max_send_message_length") and isinstance(value, int):
            values[key] = None if value < 0 else value  # grpc core: -1 means no limit
        else:
            ignored.append(key)
    try:
        config = Configuration(**configuration)
    except (ValueError, TypeError) as exc:
        raise invalid_argument(f"--grpc_channel_arguments: {exc}") from exc
    return ChannelSettings(
        max_connection_age=values.get("grpc.max_connection_age_ms"),
        max_connection_age_grace=values.get("grpc.max_connection_age_grace_ms"),
        max_concurrent_streams=values.get("grpc.max_concurrent_streams", DEFAULT_MAX_CONCURRENT_STREAMS),
        max_receive_message_length=values.get("grpc.max_receive_message_length"),
        max_send_message_length=values.get("grpc.max_send_message_length"),
        configuration=config,
        ignored=tuple(ignored),
    )


def log_ignored(settings: ChannelSettings) -> None:
    for key in settings.ignored:
        log.warning("grpc_channel_argument_ignored", argument=key,
                    message=f"--grpc_channel_arguments: {key} has no effect in this server")


class _Protocol(H2Protocol):
    """grpclib's HTTP/2 protocol plus coalesced writes, connection age (GOAWAY), SETTINGS_MAX_CONCURRENT_STREAMS,
    and a bound on what a client has started to send (`svc.frontends.read_timeouts`)."""

    def __init__(
        self, handler: Any, config: Configuration, h2_config: Any, settings: ChannelSettings,
        read_timeout: float | None,
    ) -> None:
        super().__init__(handler, config, h2_config)
        self.settings = settings
        self._timer: asyncio.TimerHandle | None = None
        self._read_timeout = read_timeout
        self._read_timer: asyncio.TimerHandle | None = None
        self._received = 0
        self._refused = False
        self._settings_acked = False

    def connection_made(self, transport: Any) -> None:
        transport = CoalescingTransport(transport, asyncio.get_running_loop())
        # grpclib's set-up (H2Protocol.connection_made), with this server's SETTINGS in the first frame h2
        # writes: a client may open streams as soon as it has that frame, so the stream cap must be in it.
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        h2 = H2Connection(config=self.h2_config)
        settings = {
            SettingCodes.MAX_HEADER_LIST_SIZE: h2.DEFAULT_MAX_HEADER_LIST_SIZE,
            SettingCodes.INITIAL_WINDOW_SIZE: self.config.http2_stream_window_size,
        }
        cap = self.settings.max_concurrent_streams
        advertised = settings if cap is None else {**settings, SettingCodes.MAX_CONCURRENT_STREAMS: cap}
        h2.local_settings = Settings(client=False, initial_values=advertised)
        h2.initiate_connection()
        # h2 enforces the cap it advertises as a connection error, failing every call on the connection;
        # `_admit` refuses the one stream instead.
        h2.local_settings = Settings(client=False, initial_values=settings)
        window = self.config.http2_connection_window_size - _INITIAL_WINDOW
        if window:
            h2.increment_flow_control_window(window)
        self.connection = Connection(h2, transport, config=self.config)
        self.connection.flush()
        self.connection.initialize()
        self.processor = EventsProcessor(self.handler, self.connection)
        if cap is not None:
            processors: dict[type, Any] = self.processor.processors
            processors[RequestReceived] = partial(self._admit, cap)
            processors[SettingsAcknowledged] = self._settings_acknowledged
        self._transport = transport
        self._check_started()
        age = self.settings.max_connection_age
        if age is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(age * random.uniform(0.9, 1.1), self._go_away)

    def _settings_acknowledged(self, event: SettingsAcknowledged) -> None:
        self._settings_acked = True  # the first ACK is for the first SETTINGS frame, the cap's
        self.processor.process_settings_acknowledged(event)

    def _admit(self, cap: int, event: RequestReceived) -> None:
        """A new call, served if the client's streams opened before it and still open are fewer than the cap
        (h2 has opened the ones that came in the same read too: the first ones get the room), else refused
        on its own with RST_STREAM REFUSED_STREAM, as gRPC core does. As there, the cap is in force once the
        client has acknowledged the SETTINGS frame carrying it (RFC 9113 6.5.3): a client may open streams
        before it has read the frame. Until then the default cap holds (gRPC core: none)."""
        h2 = self.connection._connection
        new = event.stream_id
        if not self._settings_acked:
            cap = max(cap, DEFAULT_MAX_CONCURRENT_STREAMS)
        if sum(1 for id, stream in h2.streams.items() if id % 2 and id < new and stream.open) < cap:
            self.processor.process_request_received(event)
            return
        h2.reset_stream(new, ErrorCodes.REFUSED_STREAM)  # written once the read's events are handled
        if not self._refused:
            self._refused = True
            log.info("stream_refused", max_concurrent_streams=cap,
                     message=f"a client opened more than {cap} concurrent streams on one connection")

    def _go_away(self) -> None:
        """GOAWAY (NO_ERROR), as grpc core's first one: the last stream id is the largest possible, so every
        call the client sent before it saw the frame is still served; the client opens a new connection for
        the next ones. h2's own close_connection would refuse frames of the calls still running, so the
        frame is written beside h2's state machine. Once the client has had a moment to see the frame, the
        connection closes when no call is left on it (or after grpc.max_connection_age_grace_ms)."""
        if self._transport.is_closing():
            return
        frame = GoAwayFrame(0)
        frame.last_stream_id = _INT32_MAX
        frame.error_code = 0
        self._transport.write(frame.serialize())
        loop = asyncio.get_running_loop()
        grace = self.settings.max_connection_age_grace
        if grace is not None:
            loop.call_later(grace, self._transport.close)
        loop.call_later(1.0, self._close_when_idle)

    def _close_when_idle(self) -> None:
        if self._transport.is_closing():
            return
        if self.connection._connection.open_inbound_streams == 0:
            self._transport.close()
            return
        asyncio.get_running_loop().call_later(0.1, self._close_when_idle)

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        super().data_received(data)
        self._check_started()

    def _check_started(self) -> None:
        """The read bound: armed while the handshake (preface and the first frame, SETTINGS) is unfinished or
        a frame has started and not ended; disarmed as soon as neither is."""
        if self._read_timeout is None:
            return
        waiting = self._received < _HANDSHAKE_BYTES or h2_incomplete(self.connection._connection)
        if waiting and self._read_timer is None:
            loop = asyncio.get_running_loop()
            self._read_timer = loop.call_later(self._read_timeout, self._read_timed_out)
        elif not waiting and self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self._transport.is_closing():
            return
        phase = "handshake" if self._received < _HANDSHAKE_BYTES else "frame"
        log.info("connection_timed_out", phase=phase, seconds=self._read_timeout,
                 message=f"HTTP/2 {phase} not received within {self._read_timeout:g} s; connection closed")
        self._transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._timer, self._read_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)


class ChannelServer(Server):
    """grpclib's Server with `--grpc_channel_arguments` applied."""

    def __init__(
        self, handlers: Collection[Any], *, codec: Any, settings: ChannelSettings, read_timeout: float | None = None
    ) -> None:
        super().__init__(handlers, codec=codec, config=settings.configuration)
        self._settings = settings
        self._read_timeout = read_timeout  # --request_read_timeout_seconds (None: no bound)

    def _protocol_factory(self) -> H2Protocol:
        # grpclib's own factory, with our protocol class
        self.__gc_step__()
        handler = Handler(self._mapping, self._codec, self._status_details_codec, self.__dispatch__)
        self._handlers.add(handler)
        return _Protocol(handler, self._config, self._h2_config, self._settings, self._read_timeout)
