"""A raw HTTP/2 gRPC client for the fault tests: it can declare one length and send another, stop mid-body,
or interleave calls on one connection, which the official client never does."""

from __future__ import annotations

import socket
import struct

import h2.connection
import h2.events

PREDICT = "/tensorflow.serving.PredictionService/Predict"


class RawCall:
    """gRPC calls on one connection; the first is opened at once (`self.stream`)."""

    def __init__(self, port: int, method: str = PREDICT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.conn = h2.connection.H2Connection()
        self.conn.initiate_connection()
        self.headers: dict[int, dict[str, str]] = {}
        self.ended: set[int] = set()
        self.reset: dict[int, int] = {}  # stream -> RST_STREAM error code from the server
        self.settings_received = False
        self.stream = self.open(method)

    def open(self, method: str = PREDICT) -> int:
        stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream, [
            (":method", "POST"), (":scheme", "http"), (":path", method), (":authority", "localhost"),
            ("content-type", "application/grpc"), ("te", "trailers"),
        ])
        self.headers[stream] = {}
        self._flush()
        return stream

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send(self, data: bytes, end: bool = False, stream: int | None = None) -> None:
        """DATA frames (split to the peer's frame size; waits on flow control like a real client)."""
        stream = self.stream if stream is None else stream
        view = memoryview(data)
        while view:
            window = self.conn.local_flow_control_window(stream)
            size = min(len(view), self.conn.max_outbound_frame_size, window)
            if size == 0:
                self._receive_once()
                continue
            self.conn.send_data(stream, bytes(view[:size]))
            view = view[size:]
            self._flush()
        if end:
            self.conn.end_stream(stream)
            self._flush()

    def send_message(
        self, body: bytes, declared: int | None = None, end: bool = True, stream: int | None = None
    ) -> None:
        length = len(body) if declared is None else declared
        self.send(struct.pack(">?I", False, length) + body, end=end, stream=stream)

    def _receive_once(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                for key, value in event.headers:
                    self.headers.setdefault(event.stream_id, {})[
                        key.decode() if isinstance(key, bytes) else key
                    ] = value.decode() if isinstance(value, bytes) else value
            if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                self.ended.add(event.stream_id)
            if isinstance(event, h2.events.StreamReset):
                self.reset[event.stream_id] = event.error_code
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settings_received = True
            if isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self._flush()
        return True

    def receive_settings(self) -> None:
        """Read until the server's SETTINGS frame has come (and been acknowledged)."""
        while not self.settings_received and self._receive_once():
            pass

    def status(self, stream: int | None = None) -> tuple[int, str]:
        """Read until the call ends: (grpc-status, grpc-message)."""
        stream = self.stream if stream is None else stream
        while stream not in self.ended and "grpc-status" not in self.headers.get(stream, {}):
            if not self._receive_once():
                break
        headers = self.headers.get(stream, {})
        return int(headers.get("grpc-status", "-1")), headers.get("grpc-message", "")

    def close(self) -> None:
        self.sock.close()
