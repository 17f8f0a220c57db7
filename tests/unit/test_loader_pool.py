"""LoaderPool as an actor: commands in, replies out, a fake loader through the Loader protocol."""

from __future__ import annotations

import math
import threading

import anyio
import pytest
from tensorflow.core.protobuf import meta_graph_pb2

from svc.errors import Code, PermanentError, ServingError
from svc.lifecycle.loader_pool import LoaderPool, RetryPolicy
from svc.lifecycle.messages import (
    LoaderInbox,
    LoadFailed,
    LoadVersion,
    ManagerInbox,
    ServableId,
    UnloadVersion,
    VersionLoaded,
    VersionUnloaded,
)
from svc.lifecycle.serving_map import Leases, ModelEntry, ServingMapHolder
from svc.servables.saved_model import Servable

pytestmark = pytest.mark.anyio


class FakeSession:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FlakyLoader:
    """Fails `failures` times, then loads; records attempts, how many ran at once, and unloads. A load waits
    until `together` loads run at once (at most 30 s: no thread start is too slow), then `seconds` more."""

    def __init__(self, failures: int = 0, seconds: float = 0.0, together: int = 0) -> None:
        self.failures = failures
        self.seconds = seconds
        self.together = together
        self.attempts = 0
        self.running = 0
        self.max_running = 0
        self.unloaded: list[ServableId] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def unload(self, id: ServableId, servable: Servable) -> None:
        self.unloaded.append(id)
        servable.close()

    def load(self, id: ServableId, path: str) -> Servable:
        with self._lock:
            self.attempts += 1
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            attempt = self.attempts
            self._changed.notify_all()
            self._changed.wait_for(lambda: self.running >= self.together, timeout=30)
        try:
            if self.seconds:
                import time

                time.sleep(self.seconds)
            if attempt <= self.failures:
                raise ServingError(Code.NOT_FOUND, f"attempt {attempt} failed")
            return Servable(id.name, id.version, path, FakeSession(), meta_graph_pb2.MetaGraphDef())
        finally:
            with self._lock:
                self.running -= 1


async def drive(
    pool_args: dict[str, object], commands: list[LoaderInbox], replies: int, leases: Leases | None = None
) -> list[ManagerInbox]:
    cmd_send, cmd_recv = anyio.create_memory_object_stream[LoaderInbox](math.inf)
    reply_send, reply_recv = anyio.create_memory_object_stream[ManagerInbox](math.inf)
    pool: LoaderPool[Servable] = LoaderPool(cmd_recv, reply_send, leases=leases or Leases(), **pool_args)  # type: ignore[arg-type]
    out: list[ManagerInbox] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.run)
        for command in commands:
            await cmd_send.send(command)
        with anyio.fail_after(60):  # a bound for a broken test (retries wait for real), not a measurement
            async for reply in reply_recv:
                out.append(reply)
                if len(out) == replies:
                    break
        await cmd_send.aclose()
    await reply_recv.aclose()
    return out


async def test_retries_until_success() -> None:
    loader = FlakyLoader(failures=2)
    [reply] = await drive(
        {"loader": loader, "is_aspired": lambda id: True, "retry": RetryPolicy(5, 0.0)},
        [LoadVersion(ServableId("m", 1), "/m/1")], 1,
    )
    assert isinstance(reply, VersionLoaded)
    assert loader.attempts == 3


async def test_gives_up_after_max_retries_with_the_last_error() -> None:
    loader = FlakyLoader(failures=10)
    [reply] = await drive(
        {"loader": loader, "is_aspired": lambda id: True, "retry": RetryPolicy(2, 0.0)},
        [LoadVersion(ServableId("m", 1), "/m/1")], 1,
    )
    assert reply == LoadFailed(ServableId("m", 1), Code.NOT_FOUND, "attempt 3 failed")
    assert loader.attempts == 3  # 1 + max_num_load_retries


async def test_retries_stop_when_the_version_is_no_longer_aspired() -> None:
    loader = FlakyLoader(failures=10)
    [reply] = await drive(
        {"loader": loader, "is_aspired": lambda id: False, "retry": RetryPolicy(5, 0.0)},
        [LoadVersion(ServableId("m", 1), "/m/1")], 1,
    )
    assert isinstance(reply, LoadFailed)
    assert loader.attempts == 1


async def test_a_permanent_error_is_not_retried() -> None:
    # issue 13: a model needing an unregistered op fails the same way every time; END at once.
    class UnregisteredOp(FlakyLoader):
        def load(self, id: ServableId, path: str) -> Servable:
            self.attempts += 1
            raise PermanentError(Code.NOT_FOUND, "Op type not registered 'X'")

    loader = UnregisteredOp()
    [reply] = await drive(
        {"loader": loader, "is_aspired": lambda id: True, "retry": RetryPolicy(5, 0.0)},
        [LoadVersion(ServableId("m", 1), "/m/1")], 1,
    )
    assert reply == LoadFailed(ServableId("m", 1), Code.NOT_FOUND, "Op type not registered 'X'")
    assert loader.attempts == 1


@pytest.mark.parametrize(("threads", "expected"), [(0, 1), (1, 1), (3, 3)])
async def test_load_threads_bound_parallel_loads(threads: int, expected: int) -> None:
    # Issue 9: sleeping 0.2 s per load made "3 at once" depend on thread start-up times (failed under load).
    loader = FlakyLoader(seconds=0.2, together=expected)
    commands: list[LoaderInbox] = [LoadVersion(ServableId("m", v), f"/m/{v}") for v in range(3)]
    replies = await drive(
        {"loader": loader, "is_aspired": lambda id: True, "num_load_threads": threads}, commands, 3
    )
    assert all(isinstance(r, VersionLoaded) for r in replies)
    assert loader.max_running == expected


class ObservedLeases(Leases):
    """Leases that tell when an unload starts waiting on them."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = anyio.Event()

    async def wait_released(self, id: ServableId) -> None:
        self.waiting.set()
        await super().wait_released(id)


async def test_unload_waits_for_the_leases_then_unloads() -> None:
    session = FakeSession()
    servable = Servable("m", 1, "/m/1", session, meta_graph_pb2.MetaGraphDef())
    serving_map = ServingMapHolder[Servable]()
    leases = serving_map.leases = ObservedLeases()
    serving_map.replace({"m": ModelEntry({1: servable}, {})})
    handle = serving_map.acquire("m")  # a request holds version 1
    serving_map.replace({})  # the manager took it out of the map, then asked for the unload
    loader = FlakyLoader()

    async def release_once_awaited() -> None:
        await leases.waiting.wait()
        assert not session.closed  # still held by a request
        handle.release()

    async with anyio.create_task_group() as tg:
        tg.start_soon(release_once_awaited)
        [reply] = await drive(
            {"loader": loader, "is_aspired": lambda id: True},
            [UnloadVersion(ServableId("m", 1), servable)], 1, leases,
        )
    assert reply == VersionUnloaded(ServableId("m", 1))
    assert session.closed
    assert loader.unloaded == [ServableId("m", 1)]


class RaisingSession(FakeSession):
    def close(self) -> None:
        raise RuntimeError("close failed")


async def test_any_load_exception_becomes_load_failed() -> None:
    # Issue 10: an exception outside the old allow-list (DecodeError, TypeError, ...) ended the process.
    class RaisingLoader(FlakyLoader):
        def load(self, id: ServableId, path: str) -> Servable:
            raise TypeError("Cannot interpret feed_dict key as Tensor")

    [reply] = await drive(
        {"loader": RaisingLoader(), "is_aspired": lambda id: True, "retry": RetryPolicy(1, 0.0)},
        [LoadVersion(ServableId("m", 1), "/m/1")], 1,
    )
    assert reply == LoadFailed(
        ServableId("m", 1), Code.UNKNOWN, "TypeError: Cannot interpret feed_dict key as Tensor"
    )


async def test_unload_reports_duration_and_survives_a_failing_close() -> None:
    # Issue 10: aspired_unload_duration_seconds was never observed; a close that raises still unloads.
    servable = Servable("m", 1, "/m/1", RaisingSession(), meta_graph_pb2.MetaGraphDef())
    durations: list[tuple[ServableId, float]] = []
    loader = FlakyLoader()
    [reply] = await drive(
        {"loader": loader, "is_aspired": lambda id: True,
         "on_unload_duration": lambda id, seconds: durations.append((id, seconds))},
        [UnloadVersion(ServableId("m", 1), servable)], 1,
    )
    assert reply == VersionUnloaded(ServableId("m", 1))
    assert loader.unloaded == [ServableId("m", 1)]
    assert [id for id, _ in durations] == [ServableId("m", 1)]
    assert durations[0][1] >= 0


class SlowSession(FakeSession):
    running = 0
    max_running = 0
    lock = threading.Lock()

    def close(self) -> None:
        import time

        with self.lock:
            SlowSession.running += 1
            SlowSession.max_running = max(SlowSession.max_running, SlowSession.running)
        time.sleep(0.2)
        with self.lock:
            SlowSession.running -= 1


@pytest.mark.parametrize(("threads", "expected"), [(0, 1), (3, 3)])
async def test_unload_threads_bound_parallel_unloads(threads: int, expected: int) -> None:
    SlowSession.max_running = 0
    commands: list[LoaderInbox] = [
        UnloadVersion(ServableId("m", v), Servable("m", v, f"/m/{v}", SlowSession(), meta_graph_pb2.MetaGraphDef()))
        for v in range(3)
    ]
    replies = await drive(
        {"loader": FlakyLoader(), "is_aspired": lambda id: True, "num_unload_threads": threads}, commands, 3
    )
    assert all(isinstance(r, VersionUnloaded) for r in replies)
    assert SlowSession.max_running == expected
