"""StateMonitor: the public state of every version the server has seen, as GetModelStatus reports it.

Mirrors TF Serving's `core/servable_state_monitor.cc`: it consumes every `ServableStateChanged` event, keeps
the last state per version (versions that reached END stay listed), logs each change, and lets waiters block
until a condition on the states holds (startup, ReloadConfig).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import anyio
from anyio.abc import ObjectReceiveStream

from svc.errors import Code
from svc.lifecycle.messages import ServableId, ServableStateChanged
from svc.lifecycle.states import State
from svc.logging import get_logger

log = get_logger(actor="state_monitor")


@dataclass(frozen=True, slots=True)
class VersionStatus:
    state: State
    code: Code = Code.OK
    message: str = ""
    seq: int = 0  # the monitor's event count when this state arrived


Table = Mapping[str, Mapping[int, VersionStatus]]


class StateMonitor:
    def __init__(self, inbox: ObjectReceiveStream[ServableStateChanged]) -> None:
        self._inbox = inbox
        self._table: dict[str, dict[int, VersionStatus]] = {}
        self._changed = anyio.Event()
        self.events_seen = 0

    async def run(self) -> None:
        async with self._inbox:
            async for event in self._inbox:
                self.apply(event)

    def apply(self, event: ServableStateChanged) -> None:
        versions = self._table.setdefault(event.id.name, {})
        self.events_seen += 1
        versions[event.id.version] = VersionStatus(event.state, event.code, event.message, self.events_seen)
        fields = {"model": event.id.name, "version": event.id.version, "state": event.state.name}
        if event.code is not Code.OK:
            log.warning("servable_state_changed", **fields, error_code=event.code.name, error=event.message)
        else:
            log.info("servable_state_changed", **fields)
        self._changed.set()
        self._changed = anyio.Event()

    def versions(self, name: str) -> Mapping[int, VersionStatus]:
        """Every version seen of a model, highest first."""
        versions = self._table.get(name, {})
        return MappingProxyType({v: versions[v] for v in sorted(versions, reverse=True)})

    def snapshot(self) -> Table:
        return MappingProxyType({name: self.versions(name) for name in self._table})

    async def wait_changed(self) -> None:
        await self._changed.wait()

    async def wait_until(self, condition: Callable[[Table], bool]) -> None:
        while not condition(self.snapshot()):
            await self._changed.wait()


@dataclass(frozen=True, slots=True)
class ModelsSettled:
    """TF Serving's wait after (re)configuration: every named model has a version AVAILABLE, or its load
    ended (END) with nothing AVAILABLE and nothing still loading (`ServerCore::WaitUntilModelsAvailable`).

    `since` is the monitor's event count when the configuration was sent: states older than that (a model
    removed earlier and now added again still lists its old END) do not count.
    """

    names: tuple[str, ...]
    since: int = 0

    def _current(self, table: Table, name: str) -> dict[int, VersionStatus]:
        return {v: s for v, s in table.get(name, {}).items() if s.seq > self.since}

    def done(self, table: Table) -> bool:
        """Every named model has settled: nothing still starting or loading, and something reached
        AVAILABLE or END. (TF Serving waits for the newest version only; waiting for all of a model's
        aspired versions means a client never finds an older aspired version missing right after.)"""
        for name in self.names:
            states = {s.state for s in self._current(table, name).values()}
            if states & {State.START, State.LOADING} or not states & {State.AVAILABLE, State.END}:
                return False
        return True

    def failures(self, table: Table) -> list[str]:
        """One `{name: N version: V} due to error: CODE: message}, ` item per model that failed."""
        failed = []
        for name in self.names:
            versions = self._current(table, name)
            if any(s.state is State.AVAILABLE for s in versions.values()):
                continue
            for version, status in versions.items():
                if status.code is not Code.OK:
                    failed.append(
                        f"{ServableId(name, version)} due to error: {status.code.name}: {status.message}}}, "
                    )
                    break
        return failed
