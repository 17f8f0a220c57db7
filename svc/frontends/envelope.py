"""The envelope every request passes through, whichever protocol it came in on: its request record, the
accepting gate of a draining server, its deadline, the one mapping of failures to a status, the in-flight
count and the drain wait.

Mirrors what TF Serving's gRPC and HTTP servers share around `*_impl.cc` (status -> gRPC status / HTTP code,
`util/grpc_status_util.cc`, `http_server.cc`); the frontends only render an `ServingError` in their protocol.
A `ServingError` is the request's answer; any other exception is a bug: logged once, answered INTERNAL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from svc.errors import Code, ServingError
from svc.frontends.request_log import RequestLog
from svc.logging import get_logger
from svc.request_context import RequestRecord

log = get_logger(frontend="envelope")

T = TypeVar("T")

SHUTTING_DOWN = "Server is shutting down"
INTERNAL_ERROR = "Internal error"


class Envelope:
    """One per server, shared by the gRPC and REST frontends."""

    def __init__(self, requests: RequestLog) -> None:
        self.requests = requests
        self.accepting = True
        self.inflight = 0
        self._idle: anyio.Event | None = None

    def start(self, protocol: str, api: str, request_id: str | None = None, model: str = "") -> RequestRecord:
        """The request's record (it becomes the current one for the request's context)."""
        return self.requests.start(protocol, api, request_id, model=model)

    @staticmethod
    def deadline(seconds: float | None) -> float | None:
        """The `anyio.current_time()` instant `seconds` from now (None: no deadline)."""
        return None if seconds is None else anyio.current_time() + seconds

    async def run(self, record: RequestRecord, handler: Callable[[], Awaitable[T]], *, gated: bool = True) -> T:
        """Run the request's handler and finish its record; a failure leaves as a `ServingError` to render.

        `gated=False` lets a call through while the server drains (CORS preflights)."""
        if gated and not self.accepting:
            self.requests.finish(record, Code.UNAVAILABLE, SHUTTING_DOWN)
            raise ServingError(Code.UNAVAILABLE, SHUTTING_DOWN)
        self.inflight += 1
        try:
            result = await handler()
        except ServingError as exc:
            self.requests.finish(record, exc.code, exc.message)
            raise
        except Exception as exc:
            log.exception("request_crashed", api=record.api, protocol=record.protocol, request_id=record.request_id)
            self.requests.finish(record, Code.INTERNAL, "internal error")
            raise ServingError(Code.INTERNAL, INTERNAL_ERROR) from exc
        except BaseException:  # the client went away (the handler is cancelled) or the server stops
            self.requests.finish(record, Code.CANCELLED, "cancelled")
            raise
        finally:
            self.inflight -= 1
            if not self.inflight and self._idle is not None:
                self._idle.set()
        self.requests.finish(record, Code.OK)
        return result

    def stop_accepting(self) -> None:
        """From now on new calls are answered UNAVAILABLE; calls in flight finish."""
        self.accepting = False

    async def wait_idle(self) -> None:
        """Wait until no call is in flight."""
        while self.inflight:
            self._idle = anyio.Event()
            await self._idle.wait()
