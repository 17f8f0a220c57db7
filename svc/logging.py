"""The one structlog configuration: JSON lines on stdout by default, a console renderer on request.

Events are stable snake_case names with key/value fields (`servable_loaded`, `request_finished`, ...).
Where TF Serving prints a line that tools wait for (`Running gRPC ModelServer at ...`, `Exporting HTTP/REST
API at:...`), the same text travels in the `message` field.
"""

from __future__ import annotations

import atexit
import io
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(fmt: str = "json", level: str = "info", worker: str | None = None) -> None:
    """`worker` (with --frontend_workers > 1) names the process on every line: one stream, N writers."""
    renderer: Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    else:
        # orjson renders the line as bytes, written with its newline in one write (issue 11: the stdlib
        # json.dumps + print of every request_finished line was ~8 % of a small request's CPU)
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_line)
    output = _Output(structlog.PrintLogger(sys.stdout))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *([] if worker is None else [_add_worker(worker)]),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level.lower(), logging.INFO)),
        logger_factory=lambda *args: output,
        cache_logger_on_first_use=True,
    )


def _orjson_line(event: object, **_: object) -> bytes:
    try:
        return orjson.dumps(event, default=repr, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        # A value orjson refuses (a lone surrogate from a client's JSON, issue 10 fuzzing: the request got a
        # 500): the stdlib escapes it. Rare, so the slower path costs nothing in the common case.
        return json.dumps(event, default=repr).encode()


def _add_worker(worker: str) -> Processor:
    def add(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        event.setdefault("worker", worker)
        return event

    return add


def line_buffered_stdout() -> None:
    """One write per log line on stdout, so the lines of processes sharing it never interleave mid-line."""
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(sys.stdout.fileno(), "w", closefd=False), 1 << 16),
        encoding="utf-8", line_buffering=True,
    )


_sink: ContextVar[Callable[[str], None] | None] = ContextVar("aspired_log_sink", default=None)


@contextmanager
def log_sink(sink: Callable[[str], None]) -> Iterator[None]:
    """Send the rendered lines logged in this context (and the tasks and worker threads it starts) to `sink`
    instead of stdout: one server's lines when several run in one process (the in-process e2e tests)."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


def flush_logs() -> None:
    """Write the buffered request lines now (tests; an exit without the interpreter's own clean-up)."""
    _request_lines.flush()


_REQUEST_LINE = b'"event":"request_finished"'
_CHUNK = 4096  # PIPE_BUF: a write of at most this many bytes to a pipe is never interleaved with another's
_FLUSH_AFTER = 0.05  # seconds a buffered request line may wait


class _LineBuffer:
    """`request_finished` lines (one per request), written in chunks of whole lines of at most 4 KiB, at the
    latest 50 ms after the first one waited (issue 11: a write and flush per request was ~3-4 % of a small
    request's CPU). Each chunk is one write, so the lines of processes sharing stdout (frontend workers)
    still never interleave mid-line; any other line is written after the buffered ones (`write_now`), and
    what is buffered is written at exit. A process killed outright loses at most its last 50 ms of request
    lines. One per process: loggers cached before a reconfiguration write here too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[bytes] = []
        self._size = 0
        self._stream: Any = None  # the stdout the buffered lines are for
        self._pending = threading.Event()
        self._flusher: threading.Thread | None = None

    def add(self, line: bytes, stream: Any) -> None:
        with self._lock:
            if stream is not self._stream or self._size + len(line) > _CHUNK:
                self._write()
            self._stream = stream
            self._lines.append(line)
            self._size += len(line)
            if len(self._lines) == 1:
                self._wake_flusher()

    def write_now(self, line: bytes, stream: Any) -> None:
        with self._lock:
            self._write()
            stream.write(line)  # one write: lines of processes sharing stdout do not interleave
            stream.flush()

    def flush(self) -> None:
        with self._lock:
            self._write()

    def _write(self) -> None:  # with the lock held
        if not self._lines:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        self._size = 0
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError):  # the stream was closed under us (a test's swapped stdout)
            pass

    def _wake_flusher(self) -> None:  # with the lock held
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, name="aspired-log-flush", daemon=True)
            self._flusher.start()
            atexit.register(self.flush)
        self._pending.set()

    def _flush_loop(self) -> None:
        while True:
            self._pending.wait()
            time.sleep(_FLUSH_AFTER)
            with self._lock:
                self._pending.clear()
                self._write()


_request_lines = _LineBuffer()


class _Output:
    """structlog's final logger: stdout (request lines through `_request_lines`), or the context's sink when
    `log_sink` set one."""

    def __init__(self, stdout: structlog.PrintLogger) -> None:
        self._stdout = stdout

    def msg(self, message: str | bytes) -> None:
        sink = _sink.get()
        if isinstance(message, bytes):  # a JSON line from orjson
            if sink is not None:
                sink(message.decode())
                return
            line = message + b"\n"
            stream = sys.stdout.buffer  # the stdout of the moment (tests swap it)
            if _REQUEST_LINE in message and len(line) <= _CHUNK:
                _request_lines.add(line, stream)
            else:
                _request_lines.write_now(line, stream)
        elif sink is None:
            _request_lines.flush()
            self._stdout.msg(message)
        else:
            sink(message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def get_logger(**context: object) -> FilteringBoundLogger:
    """A logger with `context` bound to every event (the filtering bound logger `configure_logging` sets)."""
    return cast(FilteringBoundLogger, structlog.get_logger(**context))
