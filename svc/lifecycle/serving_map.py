"""The immutable serving map (model -> versions -> servable, plus version labels) and the leases requests
hold on its servables.

The manager builds a new `ServingMap` on every change and swaps it in whole; frontends resolve a `ModelSpec`
against the current snapshot with no lock and no await (TF Serving's `ServableMap` in
`core/aspired_versions_manager.cc`, and `ServerCore::GetServableHandle` for labels). `acquire` hands out a
`ServableHandle`, TF Serving's `ServableHandle`: while a request holds one, the version is not unloaded; the
loader pool waits on `wait_released` before it unloads. The servable itself is opaque here (the lifecycle
never looks inside it): `S` is whatever the loader produced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Generic, TypeVar

import anyio

from svc.errors import invalid_argument, not_found
from svc.lifecycle.messages import ServableId

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class ModelEntry(Generic[S]):
    versions: Mapping[int, S]
    labels: Mapping[str, int]

    @property
    def latest(self) -> int | None:
        return max(self.versions) if self.versions else None


_EMPTY_LABELS: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ServingMap(Generic[S]):
    models: Mapping[str, ModelEntry[S]] = field(default_factory=lambda: MappingProxyType({}))

    def find(self, name: str, version: int | None = None, label: str | None = None) -> tuple[int, S]:
        """The version and servable for a ModelSpec, with TF Serving's errors; `version` wins over `label`."""
        entry = self.models.get(name)
        if version is None and label is not None:
            labels = entry.labels if entry else _EMPTY_LABELS
            if label not in labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = labels[label]
        if version is None:
            latest = entry.latest if entry else None
            if entry is None or latest is None:
                raise not_found(f"Servable not found for request: Latest({name})")
            return latest, entry.versions[latest]
        servable = entry.versions.get(version) if entry else None
        if servable is None:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return version, servable

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> S:
        return self.find(name, version, label)[1]


class Leases:
    """How many requests hold each version; event loop only."""

    def __init__(self) -> None:
        self._held: dict[ServableId, int] = {}
        self._released: dict[ServableId, anyio.Event] = {}

    def take(self, id: ServableId) -> None:
        self._held[id] = self._held.get(id, 0) + 1

    def give(self, id: ServableId) -> None:
        left = self._held[id] - 1
        if left:
            self._held[id] = left
            return
        del self._held[id]
        event = self._released.pop(id, None)
        if event is not None:
            event.set()

    def held(self, id: ServableId) -> int:
        return self._held.get(id, 0)
    async def wait_released(self, id: ServableId) -> None:
        """Return once no request holds `id` (new leases cannot start: it has left the map)."""
        if id in self._held:
            event = self._released.setdefault(id, anyio.Event())
            await event.wait()


class ServableHandle(Generic[S]):
    """One request's hold on one loaded version; `release()` (or leaving the `with` block) ends it."""

    __slots__ = ("_leases", "id", "servable")

    def __init__(self, id: ServableId, servable: S, leases: Leases) -> None:
        self.id = id
        self.servable = servable
        self._leases: Leases | None = leases
        leases.take(id)

    def release(self) -> None:
        if self._leases is not None:
            self._leases.give(self.id)
            self._leases = None

    def __enter__(self) -> S:
        return self.servable

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class ServingMapHolder(Generic[S]):
    """The one mutable cell: the manager replaces `current`, everyone else reads it and takes leases."""

    def __init__(self) -> None:
        self.current: ServingMap[S] = ServingMap()
        self.leases = Leases()
        self._changed: anyio.Event | None = None

    def replace(self, models: Mapping[str, ModelEntry[S]]) -> None:
        self.current = ServingMap(MappingProxyType(dict(models)))
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_until(self, predicate: Callable[[ServingMap[S]], bool]) -> None:
        """Wait (on the event loop) until the current map satisfies `predicate`."""
        while not predicate(self.current):
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def acquire(self, name: str, version: int | None = None, label: str | None = None) -> ServableHandle[S]:
        """Resolve a ModelSpec against the current map and lease the servable; the caller releases it."""
        found, servable = self.current.find(name, version, label)
        return ServableHandle(ServableId(name, found), servable, self.leases)
