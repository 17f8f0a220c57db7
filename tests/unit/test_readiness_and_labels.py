"""Readiness (the REST probes and gRPC health) and `check_labels` (TF Serving's version-label rule, with
labels for versions still loading) as tables over the states the monitor reports."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio
import pytest
from google.protobuf import text_format

from svc.config_files import ModelServerConfig
from svc.errors import Code, ServingError
from svc.lifecycle.config_watcher import check_labels
from svc.lifecycle.messages import ServableId, ServableStateChanged
from svc.lifecycle.readiness import Readiness
from svc.lifecycle.state_monitor import StateMonitor, VersionStatus
from svc.lifecycle.states import State

pytestmark = pytest.mark.anyio

START, LOADING, AVAILABLE, UNLOADING, END = State.START, State.LOADING, State.AVAILABLE, State.UNLOADING, State.END


def monitor() -> StateMonitor:
    send, receive = anyio.create_memory_object_stream[ServableStateChanged](math.inf)
    send.close()
    receive.close()
    return StateMonitor(receive)


def table(states: Mapping[str, Mapping[int, State]]) -> dict[str, dict[int, VersionStatus]]:
    return {name: {v: VersionStatus(s) for v, s in versions.items()} for name, versions in states.items()}


@dataclass(frozen=True)
class ReadyCase:
    id: str
    configured: tuple[str, ...]
    states: Mapping[str, Mapping[int, State]] = field(default_factory=dict)
    draining: bool = False
    not_ready: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return not self.draining and not self.not_ready


READY = [
    ReadyCase("no model configured", ()),
    ReadyCase("nothing loaded yet", ("m",), not_ready=("m",)),
    ReadyCase("loading", ("m",), {"m": {1: LOADING}}, not_ready=("m",)),
    ReadyCase("available", ("m",), {"m": {1: AVAILABLE}}),
    ReadyCase("a new version loading beside a serving one", ("m",), {"m": {2: LOADING, 1: AVAILABLE}}),
    ReadyCase("swapped: the old one ended", ("m",), {"m": {2: AVAILABLE, 1: END}}),
    ReadyCase("failed, nothing serving", ("m",), {"m": {1: END}}, not_ready=("m",)),
    ReadyCase("unloading its last version", ("m",), {"m": {1: UNLOADING}}, not_ready=("m",)),
    ReadyCase("each configured model", ("a", "b", "c"), {"a": {1: AVAILABLE}, "c": {1: LOADING}},
              not_ready=("b", "c")),
    ReadyCase("models no longer configured do not count", ("a",), {"a": {1: AVAILABLE}, "gone": {1: END}}),
    ReadyCase("draining", ("m",), {"m": {1: AVAILABLE}}, draining=True),
]


@pytest.mark.parametrize("case", READY, ids=[c.id for c in READY])
async def test_readiness(case: ReadyCase) -> None:
    states = monitor()
    readiness = Readiness(states, lambda: case.configured)
    for name, versions in table(case.states).items():
        for version, status in versions.items():
            states.apply(ServableStateChanged(ServableId(name, version), status.state))
    if case.draining:
        readiness.start_draining()
    assert readiness.models_not_ready() == list(case.not_ready)
    assert readiness.ready() is case.ready


def config(labels: Mapping[str, int], name: str = "m") -> ModelServerConfig:
    entries = "".join(f"version_labels {{ key: '{label}' value: {v} }} " for label, v in labels.items())
    return text_format.Parse(
        f"model_config_list {{ config {{ name: '{name}' base_path: '/models/{name}' {entries}}} }}",
        ModelServerConfig(),
    )


def refusal(version: int, name: str = "m") -> str:
    return (f"Request to assign label to version {version} of model {name}, which is not currently available "
            "for inference")


@dataclass(frozen=True)
class LabelCase:
    id: str
    labels: Mapping[str, int]
    states: Mapping[int, State]
    previous: Mapping[str, int] | None = None
    allow_unavailable: bool = False
    refused: int | None = None  # the version named in the FAILED_PRECONDITION


LABELS = [
    LabelCase("no labels", {}, {}),
    LabelCase("an available version", {"stable": 1}, {1: AVAILABLE}),
    LabelCase("a version still loading (tfs#1608)", {"canary": 2}, {1: AVAILABLE, 2: LOADING}),
    LabelCase("a version about to load", {"canary": 2}, {2: START}),
    LabelCase("an unknown version", {"beta": 7}, {1: AVAILABLE}, refused=7),
    LabelCase("an ended version", {"old": 1}, {1: END, 2: AVAILABLE}, refused=1),
    LabelCase("an unloading version", {"old": 1}, {1: UNLOADING, 2: AVAILABLE}, refused=1),
    LabelCase("the first refused label, by label name", {"b": 8, "a": 9}, {}, refused=9),
    LabelCase("unavailable allowed: a new label", {"beta": 7}, {}, allow_unavailable=True),
    LabelCase("unavailable allowed: an unchanged label", {"beta": 7}, {}, {"beta": 7}, allow_unavailable=True),
    LabelCase("unavailable allowed: a label moved to an unavailable version", {"beta": 7}, {}, {"beta": 6},
              allow_unavailable=True, refused=7),
    LabelCase("unavailable not allowed: an unchanged label", {"beta": 7}, {}, {"beta": 7}, refused=7),
]


@pytest.mark.parametrize("case", LABELS, ids=[c.id for c in LABELS])
async def test_check_labels(case: LabelCase) -> None:
    previous = None if case.previous is None else config(case.previous)
    states = table({"m": case.states})
    if case.refused is None:
        check_labels(config(case.labels), previous, states, case.allow_unavailable)
        return
    with pytest.raises(ServingError) as info:
        check_labels(config(case.labels), previous, states, case.allow_unavailable)
    assert (info.value.code, info.value.message) == (Code.FAILED_PRECONDITION, refusal(case.refused))


async def test_check_labels_of_the_models_asked_for_only() -> None:
    both = config({"beta": 7})
    both.model_config_list.config.add(name="other", base_path="/models/other").version_labels["x"] = 3
    check_labels(both, None, table({"m": {7: AVAILABLE}}), False, models={"m"})
    with pytest.raises(ServingError, match="version 3 of model other"):
        check_labels(both, None, table({"m": {7: AVAILABLE}}), False)
