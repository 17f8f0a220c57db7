"""The immutable serving map: model -> versions -> servable, plus version labels.

The manager builds a new `ServingMap` on every change and swaps it in whole; frontends resolve a `ModelSpec`
against the current snapshot with no lock and no await (TF Serving's `ServableMap` in
`core/aspired_versions_manager.cc`, and `ServerCore::GetServableHandle` for labels).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import anyio

from svc.errors import invalid_argument, not_found
from svc.servables.saved_model import Servable


@dataclass(frozen=True, slots=True)
class ModelEntry:
    versions: Mapping[int, Servable]
    labels: Mapping[str, int]

    @property
    def latest(self) -> Servable | None:
        return self.versions[max(self.versions)] if self.versions else None


_EMPTY_LABELS: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ServingMap:
    models: Mapping[str, ModelEntry] = field(default_factory=lambda: MappingProxyType({}))

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable for a ModelSpec, with TF Serving's errors; `version` wins over `label`."""
        entry = self.models.get(name)
        if version is None and label is not None:
            labels = entry.labels if entry else _EMPTY_LABELS
            if label not in labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = labels[label]
        if version is None:
            servable = entry.latest if entry else None
            if servable is None:
                raise not_found(f"Servable not found for request: Latest({name})")
            return servable
        servable = entry.versions.get(version) if entry else None
        if servable is None:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def acquire(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """Resolve and take a request reference; the caller must `release()` it."""
        servable = self.resolve(name, version, label)
        if not servable.acquire():  # unloading: it left the map an instant ago
            raise not_found(
                f"Servable not found for request: Specific({name}, {servable.version})"
                if version is not None or label is not None
                else f"Servable not found for request: Latest({name})"
            )
        return servable


class ServingMapHolder:
    """The one mutable cell: the manager replaces `current`, everyone else reads it."""

    def __init__(self) -> None:
        self.current = ServingMap()
        self._changed: anyio.Event | None = None

    def replace(self, models: Mapping[str, ModelEntry]) -> None:
        self.current = ServingMap(MappingProxyType(dict(models)))
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_until(self, predicate: Callable[[ServingMap], bool]) -> None:
        """Wait (on the event loop) until the current map satisfies `predicate`."""
        while not predicate(self.current):
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()
