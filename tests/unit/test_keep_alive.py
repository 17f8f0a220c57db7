"""The REST keep-alive bound as one timer per connection (issue 11: hypercorn started and cancelled two tasks
per request for it): an idle connection closes after `keep_alive_timeout`, or at once when the server shuts
down; a busy one never does."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from svc.frontends.read_timeouts import KeepAlive


class _Terminated:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def set(self) -> None:
        self._event.set()


class _Writer:
    def __init__(self) -> None:
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing


class _Server:
    """What `KeepAlive` uses of hypercorn's TCPServer."""

    def __init__(self, timeout: float) -> None:
        self.config = type("Config", (), {"keep_alive_timeout": timeout})()
        self.context = type("Context", (), {"terminated": _Terminated()})()
        self.writer = _Writer()
        self.closed = 0

    async def _initiate_server_close(self) -> None:
        self.closed += 1


async def _idle(server: Any, keep_alive: KeepAlive) -> None:
    await keep_alive.restart(None, None)


@pytest.mark.anyio
async def test_an_idle_connection_closes_after_the_timeout() -> None:
    server = _Server(0.05)
    keep_alive = KeepAlive(server)
    await _idle(server, keep_alive)
    await anyio.sleep(0.01)
    assert server.closed == 0
    with anyio.fail_after(5):
        while not server.closed:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    assert server.closed == 1
    server.writer.closing = True
    await keep_alive.stop()


@pytest.mark.anyio
async def test_a_busy_connection_stays_open() -> None:
    server = _Server(0.05)
    keep_alive = KeepAlive(server)
    for _ in range(5):  # requests come faster than the timeout
        await _idle(server, keep_alive)
        await anyio.sleep(0.02)
        await keep_alive.stop()
    await anyio.sleep(0.1)  # a request running longer than the timeout
    assert server.closed == 0
    server.writer.closing = True
    await keep_alive.stop()


@pytest.mark.anyio
async def test_shutdown_closes_idle_connections_at_once_and_busy_ones_when_they_finish() -> None:
    idle, busy = _Server(60), _Server(60)
    idle_keep, busy_keep = KeepAlive(idle), KeepAlive(busy)
    await _idle(idle, idle_keep)
    await _idle(busy, busy_keep)
    await busy_keep.stop()  # a request started
    idle.context.terminated.set()
    busy.context.terminated.set()
    with anyio.fail_after(5):
        while not idle.closed:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    assert busy.closed == 0
    await _idle(busy, busy_keep)  # its request finished
    await anyio.sleep(0.01)
    assert busy.closed == 1
    for server, keep in ((idle, idle_keep), (busy, busy_keep)):
        server.writer.closing = True
        await keep.stop()
