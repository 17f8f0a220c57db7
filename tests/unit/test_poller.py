"""Publication safety and the StoragePoller: which versions are announced, poll after poll.

A fake storage goes through the same `Storage` protocol as the real ones; a "poll" is one call, so no clock is
involved. Regression tests for TF Serving's tfs#1086 (half-copied versions loaded) and tfs#1480 (a storage blip
unloads every model).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import pytest

from svc.lifecycle.messages import (
    All,
    AspiredVersion,
    AspiredVersions,
    LabelsChanged,
    Latest,
    ManagerInbox,
    ModelConfigs,
    ModelRemoved,
    ModelSource,
    Specific,
    VersionPolicy,
)
from svc.logging import log_sink
from svc.sources.publication import Publication
from svc.sources.storage import Files, Listing, Storage, StorageError, versions_from
from svc.sources.storage_poller import StoragePoller, poll_model

BASE = "/models/m"
PB = {"saved_model.pb": 10}
VARS = {"variables/": 0, "variables/variables.index": 3, "variables/variables.data-00000-of-00001": 40}
FULL = {**PB, **VARS}
PARTIAL = {**PB, "variables/": 0, "variables/variables.index": 3}  # the data shard is not there yet
ERROR = "error"  # a step whose listing fails

State = Mapping[str, Mapping[str, int]] | str  # version directory name -> its files, or ERROR


@dataclass
class FakeStorage:
    """A base path whose content the test sets before each poll."""

    state: State = field(default_factory=dict)
    threads: set[str] = field(default_factory=set)

    def list_versions(self, base_path: str) -> Listing:
        self.threads.add(threading.current_thread().name)
        if isinstance(self.state, str):
            raise StorageError(f"Could not find base path {base_path} with error {self.state}")
        return versions_from((name, f"{base_path}/{name}") for name in self.state)

    def list_files(self, version_path: str) -> dict[str, int]:
        assert not isinstance(self.state, str)
        name = version_path.rsplit("/", 1)[-1]
        if name not in self.state:
            raise StorageError(f"Could not list {version_path}")
        return dict(self.state[name])

    def local_path(self, path: str) -> str | None:
        return path

    def fetch(self, version_path: str, files: Files, destination: str) -> None:
        raise AssertionError("the poller never fetches")


HOLD = "hold"  # nothing announced: versions are being written, none publishable yet
UNKNOWN = "unknown"  # listing failed or turned empty: nothing announced, counted as an error


def run_polls(steps: list[State], policy: VersionPolicy | None = None, marker: str = "") -> list[object]:
    """What each poll decides: the aspired versions, HOLD or UNKNOWN."""
    storage = FakeStorage()
    model = ModelSource("m", BASE, policy or Latest())
    publication = Publication(marker)
    outcomes: list[object] = []
    for state in steps:
        storage.state = state
        result = poll_model(lambda path: storage, model, publication)
        if result.error is not None or result.verdict.value == "unknown":
            outcomes.append(UNKNOWN)
        elif result.selection is None:
            outcomes.append(HOLD)
        else:
            outcomes.append(tuple(v.version for v in result.selection.aspired))
    return outcomes


LATEST_2 = Latest(2)
ALL = All()

TABLE: list[tuple[str, list[State], VersionPolicy | None, str, list[object]]] = [
    ("complete at start-up: served at once",
     [{"1": FULL}], None, "", [(1,)]),
    ("leading zeros name the version",
     [{"00000123": FULL, "tmp": FULL}], None, "", [(123,)]),
    ("nothing at start-up: TF's empty set",
     [{}, {"x": FULL}], None, "", [(), ()]),
    ("half-copied at start-up: held until complete and unchanged for two polls",
     [{"1": {"variables/": 0}}, {"1": {"variables/": 0, "variables/variables.index": 3}}, {"1": FULL},
      {"1": FULL}], None, "",
     [HOLD, HOLD, HOLD, (1,)]),
    ("slow copy of version 2 while 1 serves: 2 only once complete and stable (tfs#1086)",
     [{"1": FULL}, {"1": FULL, "2": {"variables/": 0}}, {"1": FULL, "2": {**PB, "variables/": 0}},
      {"1": FULL, "2": {**PB, "variables/": 0, "variables/variables.index": 3}},
      {"1": FULL, "2": FULL}, {"1": FULL, "2": FULL}], None, "",
     [(1,), (1,), (1,), (1,), (1,), (2,)]),
    ("a data shard still growing is not stable",
     [{"1": FULL}, {"1": FULL, "2": {**FULL, "variables/variables.data-00000-of-00001": 10}},
      {"1": FULL, "2": {**FULL, "variables/variables.data-00000-of-00001": 25}}, {"1": FULL, "2": FULL},
      {"1": FULL, "2": FULL}], None, "",
     [(1,), (1,), (1,), (1,), (2,)]),
    ("a missing shard of two keeps waiting however long it is stable",
     [{"1": {**FULL, "variables/variables.data-00000-of-00001": 0,
             "variables/variables.data-00000-of-00002": 5}}] * 4, None, "",
     [HOLD] * 4),
    ("listing error: unknown, nothing changes, and recovery needs no reload (tfs#1480)",
     [{"1": FULL}, ERROR, ERROR, {"1": FULL}], None, "", [(1,), UNKNOWN, UNKNOWN, (1,)]),
    ("base path suddenly empty: unknown, not deleted (tfs#1480)",
     [{"1": FULL}, {}, {}, {"1": FULL}], None, "", [(1,), UNKNOWN, UNKNOWN, (1,)]),
    ("only non-numeric names left: also unknown",
     [{"1": FULL}, {"lost+found": {}}], None, "", [(1,), UNKNOWN]),
    ("explicit removal while the base path answers: dropped, as TF Serving",
     [{"1": FULL, "2": FULL}, {"1": FULL}], ALL, "", [(2, 1), (1,)]),
    ("removal of the newest falls back to an older version present since start-up",
     [{"1": FULL, "2": FULL}, {"1": FULL}], None, "", [(2,), (1,)]),
    ("removal of the only published version while another is still written: hold, keep serving",
     [{"1": FULL}, {"1": FULL, "2": PARTIAL}, {"2": PARTIAL}, {"2": FULL}, {"2": FULL}], None, "",
     [(1,), (1,), HOLD, HOLD, (2,)]),
    ("first poll failed: no start-up exception afterwards",
     [ERROR, {"1": FULL}, {"1": FULL}], None, "", [UNKNOWN, HOLD, (1,)]),
    ("first poll empty: a version appearing later waits for stability",
     [{}, {"1": FULL}, {"1": FULL}], None, "", [(), HOLD, (1,)]),
    ("newest half-copied at start-up: the newest complete one serves meanwhile",
     [{"1": FULL, "2": FULL, "3": PARTIAL}, {"1": FULL, "2": FULL, "3": FULL}, {"1": FULL, "2": FULL, "3": FULL}],
     None, "", [(2,), (2,), (3,)]),
    ("latest 2 with the newest being copied",
     [{"1": FULL, "2": FULL}, {"1": FULL, "2": FULL, "3": PARTIAL}, {"1": FULL, "2": FULL, "3": FULL},
      {"1": FULL, "2": FULL, "3": FULL}], LATEST_2, "", [(2, 1), (2, 1), (2, 1), (3, 2)]),
    ("specific versions: only those, once published",
     [{"1": FULL, "2": FULL, "3": FULL}], Specific((1, 3)), "", [(3, 1)]),
    ("specific version being copied",
     [{"1": FULL}, {"1": FULL, "5": PARTIAL}, {"1": FULL, "5": FULL}, {"1": FULL, "5": FULL}],
     Specific((5,)), "", [(), HOLD, HOLD, (5,)]),
    ("marker: complete is not enough",
     [{"1": FULL}, {"1": FULL}], None, "DONE", [HOLD, HOLD]),
    ("marker: eligible as soon as it is there, without the second poll",
     [{"1": {**FULL, "DONE": 0}}, {"1": {**FULL, "DONE": 0}, "2": FULL}, {"1": {**FULL, "DONE": 0},
      "2": {**FULL, "DONE": 0}}], None, "DONE", [(1,), (1,), (2,)]),
    ("marker on an incomplete version: still held",
     [{"1": {**PB, "variables/variables.index": 3, "DONE": 0}}] * 2, None, "DONE", [HOLD, HOLD]),
    ("variable-free model (TF1 builder writes an empty variables/)",
     [{"1": {**PB, "variables/": 0}}], None, "", [(1,)]),
]


@pytest.mark.parametrize(("steps", "policy", "marker", "expected"), [t[1:] for t in TABLE],
                         ids=[t[0] for t in TABLE])
def test_publication(steps: list[State], policy: VersionPolicy | None, marker: str, expected: list[object]) -> None:
    assert run_polls(steps, policy, marker) == expected


def test_startup_version_found_incomplete_loses_its_exception() -> None:
    # 1 is in the first listing but incomplete: it must then be stable like any new version.
    assert run_polls([{"1": PARTIAL}, {"1": FULL}, {"1": FULL}]) == [HOLD, HOLD, (1,)]


def test_startup_rule_trusts_a_complete_looking_directory() -> None:
    # The documented limit of the first-poll rule: saved_model.pb copied, variables/ not yet created, looks
    # like a variable-free model. After start-up the same directory waits for a second, identical listing.
    assert run_polls([{"1": PB}]) == [(1,)]
    assert run_polls([{}, {"1": PB}, {"1": FULL}, {"1": FULL}]) == [(), HOLD, HOLD, (1,)]


def test_latest_inspects_only_what_it_needs() -> None:
    listed: list[str] = []

    class Counting(FakeStorage):
        def list_files(self, version_path: str) -> dict[str, int]:
            listed.append(version_path.rsplit("/", 1)[-1])
            return super().list_files(version_path)

    storage = Counting({str(v): FULL for v in range(1, 50)})
    model = ModelSource("m", BASE)
    publication = Publication()
    poll_model(lambda path: storage, model, publication)
    poll_model(lambda path: storage, model, publication)
    assert listed == ["49"]  # once published, a version is not listed again


def test_inspection_reports_only_changes_of_reason() -> None:
    storage = FakeStorage({"1": VARS})
    model = ModelSource("m", BASE)
    publication = Publication()

    def poll() -> list[tuple[int, bool, str | None, bool]]:
        result = poll_model(lambda path: storage, model, publication)
        return [(i.version, i.published, i.reason, i.reported) for i in result.inspections]

    assert poll() == [(1, False, "no saved_model.pb or saved_model.pbtxt", True)]
    assert poll() == [(1, False, "no saved_model.pb or saved_model.pbtxt", False)]
    storage.state = {"1": FULL}
    assert poll() == [(1, False, "listing changed since the previous poll", True)]
    assert poll() == [(1, True, None, True)]
    assert poll() == []


# --- the actor ------------------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Poller:
    def __init__(self, storage: Storage, marker: str = "") -> None:
        self.configs_send, configs = anyio.create_memory_object_stream[ModelConfigs](1)
        manager, self.manager = anyio.create_memory_object_stream[ManagerInbox](math.inf)
        self.poller = StoragePoller(configs, manager, 1, lambda path: storage, ready_marker=marker)
        self.streams: list[Any] = [self.configs_send, configs, manager, self.manager]

    def sent(self) -> list[ManagerInbox]:
        out = []
        while True:
            try:
                out.append(self.manager.receive_nowait())
            except anyio.WouldBlock:
                return out

    def close(self) -> None:
        for stream in self.streams:
            stream.close()


@pytest.fixture
def poller() -> Iterator[tuple[Poller, FakeStorage]]:
    storage = FakeStorage()
    p = Poller(storage)
    yield p, storage
    p.close()


def aspired(*versions: int, name: str = "m") -> AspiredVersions:
    return AspiredVersions(name, tuple(AspiredVersion(v, f"{BASE}/{v}") for v in versions))


@pytest.mark.anyio
async def test_poller_announces_changes_only(poller: tuple[Poller, FakeStorage]) -> None:
    p, storage = poller
    storage.state = {"1": FULL}
    await p.poller.apply(ModelConfigs((ModelSource("m", BASE, labels=(("stable", 1),)),)))
    await p.poller.poll()
    assert p.sent() == [LabelsChanged("m", (("stable", 1),)), aspired(1)]
    await p.poller.poll()
    assert p.sent() == []
    storage.state = {"1": FULL, "2": FULL}
    await p.poller.poll()
    assert p.sent() == []  # 2 is new: one more poll
    await p.poller.poll()
    assert p.sent() == [aspired(2)]
    assert threading.main_thread().name not in storage.threads  # listing never runs on the event loop


@pytest.mark.anyio
async def test_poller_counts_unknown_polls_and_keeps_the_aspired_set(poller: tuple[Poller, FakeStorage]) -> None:
    p, storage = poller
    storage.state = {"1": FULL}
    await p.poller.apply(ModelConfigs((ModelSource("m", BASE),)))
    await p.poller.poll()
    p.sent()
    states: list[State] = [ERROR, {}, ERROR]
    for state in states:
        storage.state = state
        await p.poller.poll()
    assert p.sent() == []
    stats = p.poller.statistics()
    assert (stats.polls, stats.poll_errors, stats.failing_models) == (4, 3, ("m",))
    storage.state = {"1": FULL}
    await p.poller.poll()
    assert p.sent() == []
    assert p.poller.statistics().failing_models == ()


@pytest.mark.anyio
async def test_poller_removed_model_and_new_base_path(poller: tuple[Poller, FakeStorage]) -> None:
    p, storage = poller
    storage.state = {"1": FULL}
    await p.poller.apply(ModelConfigs((ModelSource("m", BASE), ModelSource("n", BASE))))
    await p.poller.poll()
    assert {type(m).__name__ for m in p.sent()} == {"LabelsChanged", "AspiredVersions"}
    await p.poller.apply(ModelConfigs((ModelSource("n", "/models/other"),)))
    assert p.sent() == [ModelRemoved("m")]
    await p.poller.poll()
    assert p.sent() == [AspiredVersions("n", (AspiredVersion(1, "/models/other/1"),))]


@pytest.mark.anyio
async def test_poller_policy_change_reannounces(poller: tuple[Poller, FakeStorage]) -> None:
    p, storage = poller
    storage.state = {"1": FULL, "2": FULL}
    await p.poller.apply(ModelConfigs((ModelSource("m", BASE),)))
    await p.poller.poll()
    assert p.sent()[-1] == aspired(2)
    await p.poller.apply(ModelConfigs((ModelSource("m", BASE, All()),)))
    await p.poller.poll()
    assert p.sent() == [aspired(2, 1)]  # 1 was in the first listing: no wait


@pytest.mark.anyio
async def test_poller_refuses_keras_files_with_one_warning_each() -> None:
    # issue 13: only SavedModel directories are served; a Keras file is named in a warning, once.
    class KerasStorage(FakeStorage):
        def list_versions(self, base_path: str) -> Listing:
            return replace(super().list_versions(base_path), keras_files=(f"{base_path}/model.keras",))

    p = Poller(KerasStorage({"1": {"model.keras": 10}}))
    try:
        await p.poller.apply(ModelConfigs((ModelSource("m", BASE),)))
        lines: list[str] = []
        with log_sink(lines.append):  # the rendered lines (capture_logs misses loggers cached earlier)
            for _ in range(3):
                await p.poller.poll()
        logs = [json.loads(line) for line in lines]
        refused = [e for e in logs if e["event"] == "keras_file_refused"]
        assert [(e.get("path"), e.get("version")) for e in refused] == [(f"{BASE}/model.keras", None), (None, 1)]
        assert all("is a Keras file, not a SavedModel" in e["message"] for e in refused)
        assert all(e["level"] == "warning" for e in refused)
        assert not [m for m in p.sent() if isinstance(m, AspiredVersions)]  # never published
    finally:
        p.close()


@pytest.mark.anyio
async def test_poller_run_polls_once_with_zero_wait() -> None:
    storage = FakeStorage({"1": FULL})
    configs_send, configs = anyio.create_memory_object_stream[ModelConfigs](1)
    manager, received = anyio.create_memory_object_stream[ManagerInbox](math.inf)
    poller = StoragePoller(configs, manager, 0, lambda path: storage)
    async with received, anyio.create_task_group() as tg:
        tg.start_soon(poller.run)
        await configs_send.send(ModelConfigs((ModelSource("m", BASE),)))
        assert await received.receive() == LabelsChanged("m", ())
        assert await received.receive() == aspired(1)
        with anyio.fail_after(30):  # until it waits on its inbox: with no interval, no poll comes before
            while configs.statistics().tasks_waiting_receive == 0:  # noqa: ASYNC110
                await anyio.sleep(0.001)
        assert poller.polls == 1
        tg.cancel_scope.cancel()
    configs_send.close()
