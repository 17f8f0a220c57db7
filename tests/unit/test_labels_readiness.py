"""Tables for two pure decisions over the StateMonitor's table (issue 9): `check_labels` (TF Serving's
`UpdateModelVersionLabelMap` check, with labels for versions still loading) and `Readiness`."""

from __future__ import annotations

import math

import anyio
import pytest
from tensorflow_serving.config import model_server_config_pb2

from svc.errors import Code, ServingError
from svc.lifecycle.config_watcher import check_labels
from svc.lifecycle.messages import ServableId, ServableStateChanged
from svc.lifecycle.readiness import Readiness
from svc.lifecycle.state_monitor import StateMonitor, Table, VersionStatus
from svc.lifecycle.states import State

S, L, A, U, E = State.START, State.LOADING, State.AVAILABLE, State.UNLOADING, State.END


def config(**labels: dict[str, int]) -> model_server_config_pb2.ModelServerConfig:
    """One model per keyword, with its version labels."""
    result = model_server_config_pb2.ModelServerConfig()
    for name, model_labels in labels.items():
        model = result.model_config_list.config.add(name=name, base_path=f"/models/{name}")
        model.model_platform = "tensorflow"
        for label, version in model_labels.items():
            model.version_labels[label] = version
    return result


def table(**models: dict[int, State]) -> Table:
    return {name: {v: VersionStatus(state) for v, state in versions.items()} for name, versions in models.items()}


def refused(version: int, model: str = "m") -> str:
    return (
        f"Request to assign label to version {version} of model {model}, which is not currently available for "
        "inference"
    )


@pytest.mark.parametrize(
    ("labels", "previous", "states", "allow_unavailable", "models", "error"),
    [
        ({"stable": 1}, None, {1: A}, False, None, None),
        ({"stable": 1, "canary": 2}, None, {1: A, 2: L}, False, None, None),  # tfs#1608: still loading is fine
        ({"canary": 2}, None, {1: A, 2: S}, False, None, None),
        ({"canary": 3}, None, {1: A}, False, None, refused(3)),  # a version the server never saw
        ({"old": 1}, None, {1: E, 2: A}, False, None, refused(1)),  # unloaded
        ({"old": 1}, None, {1: U, 2: A}, False, None, refused(1)),  # unloading
        # --allow_version_labels_for_unavailable_models: an unavailable version keeps a label it already had...
        ({"old": 1}, {"old": 1}, {2: A}, True, None, None),
        ({"new": 3}, None, {2: A}, True, None, None),  # ... and a new label may point anywhere,
        ({"old": 3}, {"old": 1}, {2: A}, True, None, refused(3)),  # but an existing label may not move there.
        ({"canary": 3}, None, {1: A}, False, set(), None),  # models left out of `models` are not checked
        ({"canary": 3}, None, {1: A}, False, {"m"}, refused(3)),
    ],
)
def test_check_labels(
    labels: dict[str, int],
    previous: dict[str, int] | None,
    states: dict[int, State],
    allow_unavailable: bool,
    models: set[str] | None,
    error: str | None,
) -> None:
    before = config(m=previous) if previous is not None else None
    if error is None:
        check_labels(config(m=labels), before, table(m=states), allow_unavailable, models)
        return
    with pytest.raises(ServingError) as info:
        check_labels(config(m=labels), before, table(m=states), allow_unavailable, models)
    assert (info.value.code, info.value.message) == (Code.FAILED_PRECONDITION, error)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("configured", "states", "draining", "not_ready", "ready"),
    [
        (("a",), {"a": {1: A}}, False, [], True),
        (("a",), {"a": {1: A, 2: L}}, False, [], True),  # a new version loading while the old one serves
        (("a",), {"a": {1: L}}, False, ["a"], False),
        (("a",), {}, False, ["a"], False),  # nothing seen yet
        (("a", "b"), {"a": {1: A}, "b": {3: E}}, False, ["b"], False),  # b's only version failed or ended
        (("a", "b"), {"a": {1: U, 2: A}, "b": {1: A}}, False, [], True),
        (("a",), {"a": {1: A}, "gone": {1: A}}, False, [], True),  # models not configured do not count
        (("a",), {"a": {1: A}}, True, [], False),  # draining: not ready, whatever the models
    ],
)
async def test_readiness(
    configured: tuple[str, ...],
    states: dict[str, dict[int, State]],
    draining: bool,
    not_ready: list[str],
    ready: bool,
) -> None:
    send, receive = anyio.create_memory_object_stream[ServableStateChanged](math.inf)
    with send, receive:
        monitor = StateMonitor(receive)
        for name, versions in states.items():
            for version, state in versions.items():
                monitor.apply(ServableStateChanged(ServableId(name, version), state))
        readiness = Readiness(monitor, lambda: configured)
        if draining:
            readiness.start_draining()
        assert readiness.models_not_ready() == not_ready
        assert readiness.ready() is ready
