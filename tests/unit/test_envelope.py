"""The frontend envelope shared by gRPC and REST (issue 9): one table of handler outcomes -> the error the
frontend renders and the status the request record is finished with; the drain gate and the in-flight wait."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest

from svc.errors import Code, ServingError
from svc.frontends.envelope import Envelope
from svc.frontends.request_log import RequestLog
from svc.metrics import Metrics
from svc.request_context import RequestRecord

pytestmark = pytest.mark.anyio


class Recorded(RequestLog):
    """A RequestLog that remembers how each record was finished."""

    def __init__(self) -> None:
        super().__init__(Metrics())
        self.finished: list[tuple[Code, str]] = []

    def finish(self, record: RequestRecord, code: Code, error: str = "") -> None:
        self.finished.append((code, error))
        super().finish(record, code, error)


async def answer() -> str:
    return "response"


async def refuse() -> str:
    raise ServingError(Code.NOT_FOUND, "Servable not found for request: Latest(m)")


async def crash() -> str:
    raise KeyError("a bug")


Handler = Callable[[], Awaitable[str]]


@pytest.mark.parametrize(
    ("handler", "accepting", "gated", "raised", "finished"),
    [
        (answer, True, True, None, (Code.OK, "")),
        (refuse, True, True, (Code.NOT_FOUND, "Servable not found for request: Latest(m)"),
         (Code.NOT_FOUND, "Servable not found for request: Latest(m)")),
        (crash, True, True, (Code.INTERNAL, "Internal error"), (Code.INTERNAL, "internal error")),
        (answer, False, True, (Code.UNAVAILABLE, "Server is shutting down"),
         (Code.UNAVAILABLE, "Server is shutting down")),
        (answer, False, False, None, (Code.OK, "")),  # a CORS preflight while draining
    ],
)
async def test_outcomes(
    handler: Handler, accepting: bool, gated: bool, raised: tuple[Code, str] | None, finished: tuple[Code, str]
) -> None:
    requests = Recorded()
    envelope = Envelope(requests)
    envelope.accepting = accepting
    record = envelope.start("rest", "predict", "id-1", model="m")
    if raised is None:
        assert await envelope.run(record, handler, gated=gated) == "response"
    else:
        with pytest.raises(ServingError) as info:
            await envelope.run(record, handler, gated=gated)
        assert (info.value.code, info.value.message) == raised
    assert requests.finished == [finished]
    assert envelope.inflight == 0


async def test_a_cancelled_call_is_finished_cancelled() -> None:
    requests = Recorded()
    envelope = Envelope(requests)
    started = anyio.Event()

    async def hang() -> str:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with anyio.create_task_group() as tg:
        tg.start_soon(envelope.run, envelope.start("grpc", "Predict"), hang)
        await started.wait()
        assert envelope.inflight == 1
        tg.cancel_scope.cancel()
    assert requests.finished == [(Code.CANCELLED, "cancelled")]
    assert envelope.inflight == 0


async def test_drain_waits_for_calls_in_flight_and_refuses_new_ones() -> None:
    requests = Recorded()
    envelope = Envelope(requests)
    release = anyio.Event()
    entered = anyio.Event()
    order: list[str] = []

    async def slow() -> str:
        entered.set()
        await release.wait()
        order.append("call finished")
        return "response"

    async def drain() -> None:
        await envelope.wait_idle()
        order.append("drained")

    async with anyio.create_task_group() as tg:
        tg.start_soon(envelope.run, envelope.start("grpc", "Predict"), slow)
        await entered.wait()
        envelope.stop_accepting()
        tg.start_soon(drain)
        with pytest.raises(ServingError, match="Server is shutting down"):
            await envelope.run(envelope.start("rest", "predict"), answer)
        release.set()
    assert order == ["call finished", "drained"]
    assert requests.finished == [(Code.UNAVAILABLE, "Server is shutting down"), (Code.OK, "")]


async def test_deadline_is_relative_to_now() -> None:
    assert Envelope.deadline(None) is None
    before = anyio.current_time()
    deadline = Envelope.deadline(2.5)
    assert deadline is not None
    assert before + 2.5 <= deadline <= anyio.current_time() + 2.5
