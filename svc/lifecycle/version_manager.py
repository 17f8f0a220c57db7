"""VersionManager: turns aspired-version sets into loads and unloads, and owns the serving map.

Mirrors TF Serving's `core/aspired_versions_manager.cc` with its harness table (`core/loader_harness.h`).
Each message updates the table, asks the pure policy (`svc.lifecycle.policy.next_actions`) what may run now, sends
commands to the LoaderPool, swaps a new ServingMap in, and publishes public states to the StateMonitor in
TF Serving's order: AVAILABLE after the map holds the version, UNLOADING before it leaves the map.

Streams: the inbox and the LoaderPool's are unbounded (they form the manager <-> loader cycle, and a manager
step never waits on the loader); the StateMonitor's is bounded: the decision step returns the state changes
and the actor loop sends them, waiting when the monitor is behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar, assert_never, cast

from anyio.abc import ObjectReceiveStream
from anyio.streams.memory import MemoryObjectSendStream

from svc.errors import Code
from svc.lifecycle.messages import (
    AspiredVersions,
    LabelsChanged,
    LoaderInbox,
    LoadFailed,
    LoadVersion,
    ManagerInbox,
    ModelRemoved,
    ServableId,
    ServableStateChanged,
    UnloadVersion,
    VersionLoaded,
    VersionUnloaded,
)
from svc.lifecycle.policy import Forget, Load, Transition, Unload, next_actions
from svc.lifecycle.serving_map import ModelEntry, ServingMapHolder
from svc.lifecycle.states import PUBLIC_STATE, Harness, check_transition
from svc.logging import get_logger

log = get_logger(actor="version_manager")

S = TypeVar("S")


@dataclass(slots=True)
class Tracked:
    state: Harness
    path: str
    servable: object | None = None


@dataclass(slots=True)
class ModelState:
    aspired: frozenset[int] = frozenset()
    versions: dict[int, Tracked] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    paths: dict[int, str] = field(default_factory=dict)  # where each aspired version lives now


class VersionManager(Generic[S]):
    """`S`: what the loader produces (opaque here; the serving map hands it to requests)."""

    def __init__(
        self,
        inbox: ObjectReceiveStream[ManagerInbox],
        loader: MemoryObjectSendStream[LoaderInbox],
        monitor: MemoryObjectSendStream[ServableStateChanged],
        serving_map: ServingMapHolder[S],
        transition: Transition = Transition.AVAILABILITY_PRESERVING,
    ) -> None:
        self._inbox = inbox
        self._loader = loader
        self._monitor = monitor
        self._outbox: list[ServableStateChanged] = []
        self._map = serving_map
        self._transition = transition
        self._models: dict[str, ModelState] = {}

    # -- reads for other actors (no await) -----------------------------------------------------------
    def is_aspired(self, id: ServableId) -> bool:
        model = self._models.get(id.name)
        return model is not None and id.version in model.aspired

    def harness_snapshot(self, name: str) -> dict[int, Harness]:
        model = self._models.get(name)
        return {v: t.state for v, t in model.versions.items()} if model else {}

    # -- actor loop ------------------------------------------------------------------------------------
    async def run(self) -> None:
        async with self._inbox, self._loader, self._monitor:
            async for message in self._inbox:
                for event in self.handle(message):
                    await self._monitor.send(event)

    def models(self) -> list[str]:
        """The models the manager tracks (aspired, labelled, or with versions not yet final)."""
        return list(self._models)

    def handle(self, message: ManagerInbox) -> list[ServableStateChanged]:
        """The decision step: callable without an event loop (loader commands are sent without waiting);
        returns the state changes to publish, in order."""
        self._decide(message)
        events, self._outbox = self._outbox, []
        return events

    def _decide(self, message: ManagerInbox) -> None:
        match message:
            case AspiredVersions(name=name, versions=versions):
                self._on_aspired(name, {v.version: v.path for v in versions})
            case ModelRemoved(name=name):
                if name in self._models:
                    self._models[name].labels = {}  # labels come from the config, which no longer has it
                self._on_aspired(name, {})
            case LabelsChanged(name=name, labels=labels):
                self._models.setdefault(name, ModelState()).labels = dict(labels)
                self._publish_map()
            case VersionLoaded(id=id, servable=servable):
                tracked = self._set(id, Harness.READY)
                tracked.servable = servable
                self._publish_map()
                self._publish(id, Harness.READY)
                log.info("servable_loaded", model=id.name, version=id.version)
                self._step(id.name)
            case LoadFailed(id=id, code=code, message=text):
                self._set(id, Harness.ERROR)
                self._publish(id, Harness.ERROR, code, text)
                log.error("servable_load_failed", model=id.name, version=id.version, error_code=code.name,
                          error=text)
                self._step(id.name)
            case VersionUnloaded(id=id):
                tracked = self._set(id, Harness.DISABLED)
                tracked.servable = None
                self._publish(id, Harness.DISABLED)
                log.info("servable_unloaded", model=id.name, version=id.version)
                model = self._models[id.name]
                if id.version in model.aspired:  # aspired again while it was unloading: load it anew
                    model.versions[id.version] = Tracked(Harness.NEW, model.paths.get(id.version, tracked.path))
                    self._publish(id, Harness.NEW)
                self._step(id.name)
            case _:
                assert_never(message)

    def _on_aspired(self, name: str, versions: dict[int, str]) -> None:
        model = self._models.setdefault(name, ModelState())
        model.aspired = frozenset(versions)
        model.paths = dict(versions)
        log.info("aspired_versions_received", model=name, versions=sorted(versions, reverse=True))
        for version, path in versions.items():
            tracked = model.versions.get(version)
            if tracked is None or tracked.state is Harness.DISABLED:
                model.versions[version] = Tracked(Harness.NEW, path)
                self._publish(ServableId(name, version), Harness.NEW)
        # A failed version is not retried while it stays aspired; it is forgotten once it leaves the set.
        for version in [v for v, t in model.versions.items() if t.state.is_final and v not in versions]:
            del model.versions[version]
        self._step(name)

    def _step(self, name: str) -> None:
        model = self._models[name]
        harness = {v: t.state for v, t in model.versions.items()}
        map_changed = False
        for action in next_actions(harness, model.aspired, self._transition):
            id = ServableId(name, action.version)
            match action:
                case Forget():
                    self._set(id, Harness.DISABLED)
                    self._publish(id, Harness.DISABLED)
                case Load():
                    tracked = self._set(id, Harness.LOADING)
                    self._publish(id, Harness.LOADING)
                    self._loader.send_nowait(LoadVersion(id, tracked.path))
                case Unload():
                    tracked = self._set(id, Harness.UNLOADING)
                    assert tracked.servable is not None
                    self._publish(id, Harness.UNLOADING)
                    map_changed = True
                    self._loader.send_nowait(UnloadVersion(id, tracked.servable))
                case _:
                    assert_never(action)
        if map_changed:
            self._publish_map()
        if not model.aspired and not model.labels and all(t.state.is_final for t in model.versions.values()):
            del self._models[name]

    def _set(self, id: ServableId, state: Harness) -> Tracked:
        tracked = self._models[id.name].versions[id.version]
        check_transition(tracked.state, state)
        tracked.state = state
        return tracked

    def _publish(self, id: ServableId, state: Harness, code: Code = Code.OK, message: str = "") -> None:
        self._outbox.append(ServableStateChanged(id, PUBLIC_STATE[state], code, message))

    def _publish_map(self) -> None:
        entries: dict[str, ModelEntry[S]] = {}
        for name, model in self._models.items():
            versions = {
                v: cast(S, t.servable)  # what this manager's loader pool loaded
                for v, t in model.versions.items()
                if t.state is Harness.READY and t.servable is not None
            }
            if versions or model.labels:
                entries[name] = ModelEntry(versions, dict(model.labels))
        self._map.replace(entries)
