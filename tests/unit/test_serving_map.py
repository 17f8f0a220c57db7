"""The serving map's resolution (TF Serving's texts) and its leases, TF Serving's `ServableHandle` (issue 9)."""

from __future__ import annotations

import anyio
import pytest

from svc.errors import Code, ServingError
from svc.lifecycle.messages import ServableId
from svc.lifecycle.serving_map import ModelEntry, ServingMapHolder


def holder() -> ServingMapHolder[str]:
    serving_map = ServingMapHolder[str]()
    serving_map.replace({
        "m": ModelEntry({1: "m1", 3: "m3"}, {"stable": 1, "canary": 3, "gone": 2}),
        "labels_only": ModelEntry({}, {"stable": 1}),
    })
    return serving_map


@pytest.mark.parametrize(
    ("name", "version", "label", "found"),
    [
        ("m", None, None, (3, "m3")),  # latest
        ("m", 1, None, (1, "m1")),
        ("m", None, "stable", (1, "m1")),
        ("m", 3, "stable", (3, "m3")),  # a version wins over a label
        ("m", 2, None, (Code.NOT_FOUND, "Servable not found for request: Specific(m, 2)")),
        ("m", None, "gone", (Code.NOT_FOUND, "Servable not found for request: Specific(m, 2)")),
        ("m", None, "nope", (Code.INVALID_ARGUMENT, "Unrecognized servable version label: nope")),
        ("x", None, None, (Code.NOT_FOUND, "Servable not found for request: Latest(x)")),
        ("x", None, "stable", (Code.INVALID_ARGUMENT, "Unrecognized servable version label: stable")),
        ("labels_only", None, None, (Code.NOT_FOUND, "Servable not found for request: Latest(labels_only)")),
    ],
)
def test_find(name: str, version: int | None, label: str | None, found: tuple[object, object]) -> None:
    serving_map = holder().current
    if isinstance(found[0], Code):
        with pytest.raises(ServingError) as info:
            serving_map.find(name, version, label)
        assert (info.value.code, info.value.message) == found
    else:
        assert serving_map.find(name, version, label) == found


def test_leases_count_handles_and_release_once() -> None:
    serving_map = holder()
    first = serving_map.acquire("m")
    with serving_map.acquire("m", label="canary") as servable:
        assert servable == "m3"
        assert serving_map.leases.held(ServableId("m", 3)) == 2
    assert serving_map.leases.held(ServableId("m", 3)) == 1
    first.release()
    first.release()  # a second release is a no-op
    assert serving_map.leases.held(ServableId("m", 3)) == 0


def test_a_lease_outlives_the_map_it_came_from() -> None:
    serving_map = holder()
    handle = serving_map.acquire("m", 1)
    serving_map.replace({})
    assert handle.servable == "m1"
    assert serving_map.leases.held(ServableId("m", 1)) == 1
    handle.release()
    assert serving_map.leases.held(ServableId("m", 1)) == 0


@pytest.mark.anyio
async def test_wait_released_returns_once_the_last_lease_is_released() -> None:
    serving_map = holder()
    a, b = serving_map.acquire("m", 1), serving_map.acquire("m", 1)
    released: list[str] = []

    async def unload() -> None:
        await serving_map.leases.wait_released(ServableId("m", 1))
        released.append("unloaded")

    async with anyio.create_task_group() as tg:
        tg.start_soon(unload)
        await anyio.wait_all_tasks_blocked()
        a.release()
        await anyio.wait_all_tasks_blocked()
        assert released == []
        b.release()
    assert released == ["unloaded"]
    await serving_map.leases.wait_released(ServableId("m", 3))  # nothing holds it: returns at once
