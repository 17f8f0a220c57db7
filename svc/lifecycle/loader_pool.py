"""LoaderPool: loads and unloads servables on their own threads, with TF Serving's retry rules.

Mirrors TF Serving's `core/loader_harness.cc` (load with retries, `util/retrier.cc`) and the manager's load /
unload executors (`--num_load_threads`, `--num_unload_threads`; 0 means one at a time, as TF Serving's
serial mode). Loading never runs on the event loop. Every load ends in a `VersionLoaded` or `LoadFailed`
reply and every unload in a `VersionUnloaded`, so the manager never waits on a thread. An unload first waits
until no request holds a lease on the version (TF Serving's manager waits for the servable's handles). What a
load and an unload do is the `Loader`'s business (`svc.servables.loader.SavedModelLoader`): here the loaded
servable is opaque.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, assert_never, cast

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream, TaskGroup

from svc.errors import Code, PermanentError, ServingError
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
from svc.logging import get_logger

log = get_logger(actor="loader_pool")

S = TypeVar("S")


class Loader(Protocol[S]):
    """Loads and unloads one version; both block (they run in the pool's threads)."""

    def load(self, id: ServableId, path: str) -> S: ...

    def unload(self, id: ServableId, servable: S) -> None: ...


class Leases(Protocol):
    """The serving map's leases: an unload waits until no request holds the version."""

    async def wait_released(self, id: ServableId) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 5
    interval_seconds: float = 60.0


class LoaderPool(Generic[S]):
    def __init__(
        self,
        inbox: ObjectReceiveStream[LoaderInbox],
        replies: ObjectSendStream[ManagerInbox],
        loader: Loader[S],
        is_aspired: Callable[[ServableId], bool],
        leases: Leases,
        *,
        num_load_threads: int = 0,
        num_unload_threads: int = 0,
        retry: RetryPolicy | None = None,
        on_unload_duration: Callable[[ServableId, float], None] | None = None,
    ) -> None:
        self._inbox = inbox
        self._replies = replies
        self._loader = loader
        self._is_aspired = is_aspired
        self._leases = leases
        self._load_limiter = anyio.CapacityLimiter(max(num_load_threads, 1))
        self._unload_limiter = anyio.CapacityLimiter(max(num_unload_threads, 1))
        self._retry = retry or RetryPolicy()
        self._on_unload_duration = on_unload_duration
        self.loads_in_progress = 0

    def set_load_threads(self, n: int) -> None:
        """TF Serving loads the initial models with many threads, later ones with `num_load_threads`."""
        self._load_limiter.total_tokens = max(n, 1)

    async def run(self) -> None:
        async with self._inbox, self._replies, anyio.create_task_group() as tg:
            async for command in self._inbox:
                self._start(tg, command)

    def _start(self, tg: TaskGroup, command: LoaderInbox) -> None:
        match command:
            case LoadVersion():
                tg.start_soon(self._load, command)
            case UnloadVersion():
                tg.start_soon(self._unload, command)
            case _:
                assert_never(command)

    async def _load(self, command: LoadVersion) -> None:
        attempts = 1 + max(self._retry.max_retries, 0)
        error = ServingError(Code.UNKNOWN, "load not attempted")
        self.loads_in_progress += 1
        try:
            for attempt in range(attempts):
                if attempt:
                    if self._retry.interval_seconds > 0:
                        await anyio.sleep(self._retry.interval_seconds)
                    if not self._is_aspired(command.id):
                        log.info("servable_load_retry_abandoned", model=command.id.name,
                                 version=command.id.version)
                        break
                    log.info("servable_load_retry", model=command.id.name, version=command.id.version,
                             retry=attempt)
                result = await anyio.to_thread.run_sync(
                    self._attempt, command, attempt + 1, limiter=self._load_limiter
                )
                if isinstance(result, ServingError):
                    error = result
                    if isinstance(result, PermanentError):
                        break  # retrying cannot help (e.g. an unregistered op): END now, not minutes later
                    continue
                servable = result
                await self._replies.send(VersionLoaded(command.id, servable))
                return
            await self._replies.send(LoadFailed(command.id, error.code, error.message))
        finally:
            self.loads_in_progress -= 1

    def _attempt(self, command: LoadVersion, attempt: int) -> S | ServingError:
        """One load attempt (in a loader thread): the servable, or the error it failed with, logged once."""
        try:
            return self._loader.load(command.id, command.path)
        except ServingError as exc:
            log.warning("servable_load_attempt_failed", model=command.id.name, version=command.id.version,
                        attempt=attempt, error=exc.message)
            return exc
        except Exception as exc:  # a SavedModel is input, not code: it never ends the process (issue 10)
            # TF Serving's text for an unexpected error: `UNKNOWN: <type>: <message>`.
            error = ServingError(Code.UNKNOWN, f"{type(exc).__name__}: {exc}")
            log.exception("servable_load_attempt_failed", model=command.id.name, version=command.id.version,
                          attempt=attempt, error=error.message)
            return error

    async def _unload(self, command: UnloadVersion) -> None:
        started = time.perf_counter()
        await self._leases.wait_released(command.id)
        await anyio.to_thread.run_sync(self._close, command, limiter=self._unload_limiter)
        if self._on_unload_duration is not None:
            self._on_unload_duration(command.id, time.perf_counter() - started)
        await self._replies.send(VersionUnloaded(command.id))

    def _close(self, command: UnloadVersion) -> None:
        try:
            self._loader.unload(command.id, cast(S, command.servable))
        except Exception:  # a session that fails to close is still gone: the unload completes (issue 10)
            log.exception("servable_unload_failed", model=command.id.name, version=command.id.version)
        # A TF graph is full of reference cycles: collect it now rather than whenever the next full
        # collection happens. Cheap because the supervisor froze everything that existed before the loads.
        gc.collect()
