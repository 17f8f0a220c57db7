"""StateMonitor (the public states GetModelStatus reports) and ModelsSettled (TF Serving's
`WaitUntilModelsAvailable`: when start-up and ReloadConfig answer, and with which error), as tables."""

from __future__ import annotations

import math
from dataclasses import dataclass

import anyio
import pytest

from svc.errors import Code
from svc.lifecycle.messages import ServableId, ServableStateChanged
from svc.lifecycle.state_monitor import ModelsSettled, StateMonitor, VersionStatus
from svc.lifecycle.states import State

pytestmark = pytest.mark.anyio

START, LOADING, AVAILABLE, UNLOADING, END = State.START, State.LOADING, State.AVAILABLE, State.UNLOADING, State.END


def change(name: str, version: int, state: State, code: Code = Code.OK, message: str = "") -> ServableStateChanged:
    return ServableStateChanged(ServableId(name, version), state, code, message)


def monitor_after(*events: ServableStateChanged) -> StateMonitor:
    send, receive = anyio.create_memory_object_stream[ServableStateChanged](math.inf)
    send.close()  # `apply` is fed directly here: `run` does not read the inbox
    receive.close()
    monitor = StateMonitor(receive)
    for event in events:
        monitor.apply(event)
    return monitor


@dataclass(frozen=True)
class Case:
    id: str
    events: tuple[ServableStateChanged, ...]
    names: tuple[str, ...] = ("m",)
    since: int = 0
    done: bool = True
    failures: tuple[str, ...] = ()


FAILED = change("m", 1, END, Code.UNKNOWN, "boom")
FAILED_TEXT = "{name: m version: 1} due to error: UNKNOWN: boom}, "

SETTLED = [
    Case("nothing seen yet", (), done=False),
    Case("start", (change("m", 1, START),), done=False),
    Case("loading", (change("m", 1, START), change("m", 1, LOADING)), done=False),
    Case("available", (change("m", 1, LOADING), change("m", 1, AVAILABLE))),
    Case("load failed", (change("m", 1, LOADING), FAILED), failures=(FAILED_TEXT,)),
    Case("one of two versions still loading", (change("m", 2, AVAILABLE), change("m", 1, LOADING)), done=False),
    Case("a failed version beside an available one", (change("m", 2, AVAILABLE), change("m", 1, END, Code.UNKNOWN, "x"))),
    Case("unloaded cleanly: settled, no error", (change("m", 1, AVAILABLE), change("m", 1, END))),
    Case("unloading an old version while the new one serves", (change("m", 2, AVAILABLE), change("m", 1, UNLOADING))),
    Case("only the named models count", (change("m", 1, AVAILABLE), change("other", 1, LOADING))),
    Case("every named model", (change("a", 1, AVAILABLE), change("b", 1, LOADING)), names=("a", "b"), done=False),
    Case(
        "the first failure of each failed model",
        (change("a", 1, END, Code.NOT_FOUND, "gone"), change("b", 1, AVAILABLE), change("c", 2, END, Code.UNKNOWN, "bad")),
        names=("a", "b", "c"),
        failures=("{name: a version: 1} due to error: NOT_FOUND: gone}, ",
                  "{name: c version: 2} due to error: UNKNOWN: bad}, "),
    ),
    Case("states before `since` do not count", (FAILED,), since=1, done=False),
    Case("a re-added model settles on its new states", (FAILED, change("m", 1, LOADING), change("m", 1, AVAILABLE)),
         since=1),
    Case("a re-added model fails on its new error", (change("m", 1, END), FAILED), since=1, failures=(FAILED_TEXT,)),
]


@pytest.mark.parametrize("case", SETTLED, ids=[c.id for c in SETTLED])
async def test_models_settled(case: Case) -> None:
    table = monitor_after(*case.events).snapshot()
    settled = ModelsSettled(case.names, case.since)
    assert settled.done(table) is case.done
    if case.done:
        assert settled.failures(table) == list(case.failures)


async def test_the_last_state_of_each_version_is_kept_highest_version_first() -> None:
    monitor = monitor_after(
        change("m", 1, LOADING), change("m", 1, AVAILABLE), change("m", 3, LOADING), change("n", 7, START),
        change("m", 2, END, Code.UNKNOWN, "broken"),
    )
    assert list(monitor.versions("m")) == [3, 2, 1]
    assert dict(monitor.versions("m")) == {
        3: VersionStatus(LOADING, seq=3),
        2: VersionStatus(END, Code.UNKNOWN, "broken", seq=5),
        1: VersionStatus(AVAILABLE, seq=2),
    }
    assert dict(monitor.snapshot()["n"]) == {7: VersionStatus(START, seq=4)}
    assert dict(monitor.versions("unknown")) == {}
    assert monitor.events_seen == 5


async def test_wait_until_wakes_on_the_change_that_satisfies_the_condition() -> None:
    send, receive = anyio.create_memory_object_stream[ServableStateChanged](math.inf)
    monitor = StateMonitor(receive)
    settled = ModelsSettled(("m",))
    reached: list[int] = []
    woken = anyio.Event()

    async def waiter() -> None:
        await monitor.wait_until(settled.done)
        reached.append(monitor.events_seen)
        woken.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(monitor.run)
        tg.start_soon(waiter)
        for event in (change("m", 1, START), change("m", 1, LOADING), change("m", 1, AVAILABLE)):
            await send.send(event)
        with anyio.fail_after(30):
            await woken.wait()
        tg.cancel_scope.cancel()
    send.close()
    assert reached == [3]  # not before the AVAILABLE
