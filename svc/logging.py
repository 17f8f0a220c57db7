"""The one structlog configuration: JSON lines on stdout by default, a console renderer on request.

Events are stable snake_case names with key/value fields (`servable_loaded`, `request_finished`, ...).
Where TF Serving prints a line that tools wait for (`Running gRPC ModelServer at ...`, `Exporting HTTP/REST
API at:...`), the same text travels in the `message` field.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import cast

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


class _Output:
    """structlog's final logger: stdout, or the context's sink when `log_sink` set one."""

    def __init__(self, stdout: structlog.PrintLogger) -> None:
        self._stdout = stdout

    def msg(self, message: str | bytes) -> None:
        sink = _sink.get()
        if isinstance(message, bytes):  # a JSON line from orjson
            if sink is not None:
                sink(message.decode())
                return
            stream = sys.stdout.buffer  # the stdout of the moment (tests swap it)
            stream.write(message + b"\n")  # one write: lines of processes sharing stdout do not interleave
            stream.flush()
        elif sink is None:
            self._stdout.msg(message)
        else:
            sink(message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def get_logger(**context: object) -> FilteringBoundLogger:
    """A logger with `context` bound to every event (the filtering bound logger `configure_logging` sets)."""
    return cast(FilteringBoundLogger, structlog.get_logger(**context))
