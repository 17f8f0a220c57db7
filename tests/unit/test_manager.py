"""VersionManager as an actor: messages in, loader commands, state events and serving maps out."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from tensorflow.core.protobuf import meta_graph_pb2

from svc.errors import Code
from svc.lifecycle.messages import (
    AspiredVersion,
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
from svc.lifecycle.policy import Transition
from svc.lifecycle.serving_map import ServingMapHolder
from svc.lifecycle.states import State
from svc.lifecycle.version_manager import VersionManager
from svc.servables.saved_model import Servable


class FakeSession:
    closed = False

    def close(self) -> None:
        self.closed = True


def servable(name: str, version: int) -> Servable:
    return Servable(name, version, f"/m/{version}", FakeSession(), meta_graph_pb2.MetaGraphDef())


class Harness:
    def __init__(self, transition: Transition = Transition.AVAILABILITY_PRESERVING) -> None:
        inbox_send, inbox = anyio.create_memory_object_stream[ManagerInbox](math.inf)
        loader_send, self.loader = anyio.create_memory_object_stream[LoaderInbox](math.inf)
        monitor_send, self.monitor = anyio.create_memory_object_stream[ServableStateChanged](math.inf)
        self.streams: list[Any] = [inbox_send, inbox, loader_send, self.loader, monitor_send, self.monitor]
        self.map = ServingMapHolder[Servable]()
        self.published: list[ServableStateChanged] = []
        self.manager = VersionManager(inbox, loader_send, monitor_send, self.map, transition)

    def close(self) -> None:
        for stream in self.streams:
            stream.close()

    def commands(self) -> list[Any]:
        out = []
        while True:
            try:
                out.append(self.loader.receive_nowait())
            except anyio.WouldBlock:
                return out

    def handle(self, message: ManagerInbox) -> None:
        self.published += self.manager.handle(message)

    def events(self) -> list[tuple[int, State]]:
        out = [(e.id.version, e.state) for e in self.published]
        self.published = []
        return out

    def aspire(self, *versions: int) -> None:
        self.handle(AspiredVersions("m", tuple(AspiredVersion(v, f"/m/{v}") for v in versions)))


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(transition: Transition = Transition.AVAILABILITY_PRESERVING) -> Harness:
        made.append(Harness(transition))
        return made[-1]

    yield make
    for h in made:
        h.close()


def test_first_load_publishes_start_loading_available_in_order(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.aspire(1)
    assert h.commands() == [LoadVersion(ServableId("m", 1), "/m/1")]
    s1 = servable("m", 1)
    h.handle(VersionLoaded(ServableId("m", 1), s1))
    assert h.events() == [(1, State.START), (1, State.LOADING), (1, State.AVAILABLE)]
    assert h.map.current.resolve("m") is s1


def test_upgrade_keeps_old_version_serving_until_new_one_is_ready(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.aspire(1)
    s1, s2 = servable("m", 1), servable("m", 2)
    h.handle(VersionLoaded(ServableId("m", 1), s1))
    h.commands()
    h.events()
    h.aspire(2)
    assert h.commands() == [LoadVersion(ServableId("m", 2), "/m/2")]
    assert h.map.current.resolve("m") is s1  # still serving while 2 loads
    h.handle(VersionLoaded(ServableId("m", 2), s2))
    [unload] = h.commands()
    assert isinstance(unload, UnloadVersion)
    assert unload.id == ServableId("m", 1)
    assert unload.servable is s1  # out of the map: no new request can lease it
    assert h.map.current.resolve("m") is s2
    assert h.map.current.models["m"].versions.keys() == {2}
    h.handle(VersionUnloaded(ServableId("m", 1)))
    assert h.events() == [
        (2, State.START), (2, State.LOADING), (2, State.AVAILABLE), (1, State.UNLOADING), (1, State.END)
    ]


def test_failed_load_keeps_previous_version_and_reports_the_error(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.aspire(1)
    s1 = servable("m", 1)
    h.handle(VersionLoaded(ServableId("m", 1), s1))
    h.aspire(2)
    h.handle(LoadFailed(ServableId("m", 2), Code.NOT_FOUND, "no saved_model.pb"))
    assert h.map.current.resolve("m") is s1
    events = [e for e in h.events() if e[0] == 2]
    assert events[-1] == (2, State.END)
    assert h.commands() == [LoadVersion(ServableId("m", 1), "/m/1"), LoadVersion(ServableId("m", 2), "/m/2")]
    # Still aspired: not retried on the next announcement (TF Serving's reload-with-error is off).
    h.aspire(2)
    assert h.commands() == []


def test_model_removed_unloads_everything(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.aspire(1)
    h.handle(VersionLoaded(ServableId("m", 1), servable("m", 1)))
    h.commands()
    h.handle(ModelRemoved("m"))
    [unload] = h.commands()
    assert isinstance(unload, UnloadVersion)
    assert "m" not in h.map.current.models


def test_resource_preserving_unloads_before_loading(harness: Callable[..., Harness]) -> None:
    h = harness(Transition.RESOURCE_PRESERVING)
    h.aspire(1)
    h.handle(VersionLoaded(ServableId("m", 1), servable("m", 1)))
    h.commands()
    h.aspire(2)
    [unload] = h.commands()
    assert isinstance(unload, UnloadVersion)
    h.handle(VersionUnloaded(ServableId("m", 1)))
    assert h.commands() == [LoadVersion(ServableId("m", 2), "/m/2")]


def test_labels_resolve_through_the_map(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.aspire(1, 2)
    s1, s2 = servable("m", 1), servable("m", 2)
    h.handle(VersionLoaded(ServableId("m", 1), s1))
    h.handle(VersionLoaded(ServableId("m", 2), s2))
    h.handle(LabelsChanged("m", (("stable", 1), ("canary", 2))))
    assert h.map.current.resolve("m", label="stable") is s1
    assert h.map.current.resolve("m", label="canary") is s2
    from svc.errors import ServingError

    with pytest.raises(ServingError, match="Unrecognized servable version label: beta"):
        h.map.current.resolve("m", label="beta")


def test_is_aspired_follows_the_latest_set(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.aspire(1)
    assert h.manager.is_aspired(ServableId("m", 1))
    h.aspire(2)
    assert not h.manager.is_aspired(ServableId("m", 1))


def test_version_aspired_again_while_unloading_is_loaded_again(harness: Callable[..., Harness]) -> None:
    # Found in review: a model removed and re-added before its unload finished stayed unloaded for good.
    h = harness()
    h.aspire(1)
    h.handle(VersionLoaded(ServableId("m", 1), servable("m", 1)))
    h.commands()
    h.handle(ModelRemoved("m"))
    [unload] = h.commands()
    assert isinstance(unload, UnloadVersion)
    h.aspire(1)  # back in the config before the unload finished
    assert h.commands() == []
    h.handle(VersionUnloaded(ServableId("m", 1)))
    assert h.commands() == [LoadVersion(ServableId("m", 1), "/m/1")]
    fresh = servable("m", 1)
    h.handle(VersionLoaded(ServableId("m", 1), fresh))
    assert h.map.current.resolve("m") is fresh


def test_rollback_reloads_the_old_version(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.aspire(1)
    h.handle(VersionLoaded(ServableId("m", 1), servable("m", 1)))
    h.aspire(2)
    h.handle(VersionLoaded(ServableId("m", 2), servable("m", 2)))
    h.commands()  # LoadVersion(1), LoadVersion(2), UnloadVersion(1)
    h.aspire(1)  # version 2 deleted while 1 was unloading
    h.handle(VersionUnloaded(ServableId("m", 1)))
    assert LoadVersion(ServableId("m", 1), "/m/1") in h.commands()


def test_removed_model_forgets_its_labels(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.aspire(1)
    h.handle(VersionLoaded(ServableId("m", 1), servable("m", 1)))
    h.handle(LabelsChanged("m", (("stable", 1),)))
    h.handle(ModelRemoved("m"))
    from svc.errors import ServingError

    with pytest.raises(ServingError, match="Unrecognized servable version label: stable"):
        h.map.current.resolve("m", label="stable")
