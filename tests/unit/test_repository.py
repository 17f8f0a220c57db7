"""ConfigWatcher's per-model load and unload (the V2 repository extension, issue 12): what the poller is told,
when the calls answer, and the rule across later configs (an explicit unload holds until an explicit load;
a config that drops the model forgets it). Actor tests: queues in, messages out, states fed by hand."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import anyio
import pytest
from google.protobuf import text_format

from svc.config_files import ModelServerConfig
from svc.errors import Code, ServingError
from svc.lifecycle.config_watcher import ConfigWatcher
from svc.lifecycle.messages import ModelConfigs, ServableId, ServableStateChanged
from svc.lifecycle.state_monitor import StateMonitor
from svc.lifecycle.states import State

pytestmark = pytest.mark.anyio


def config(*names: str) -> ModelServerConfig:
    body = "".join(f'config {{ name: "{n}" base_path: "/models/{n}" model_platform: "tensorflow" }} ' for n in names)
    return text_format.Parse(f"model_config_list {{ {body}}}", ModelServerConfig())


def watched(configs: ModelConfigs) -> list[str]:
    return [m.name for m in configs.models]


class Rig:
    def __init__(self, *names: str) -> None:
        self.out, self.received = anyio.create_memory_object_stream[ModelConfigs](math.inf)
        send, receive = anyio.create_memory_object_stream[ServableStateChanged](math.inf)
        send.close()
        receive.close()
        self.monitor = StateMonitor(receive)  # fed with `apply` by the test
        self.watcher = ConfigWatcher(self.out, config(*names), self.monitor)

    def close(self) -> None:
        self.out.close()
        self.received.close()

    def state(self, name: str, version: int, state: State, code: Code = Code.OK) -> None:
        self.monitor.apply(ServableStateChanged(ServableId(name, version), state, code, "boom" if code else ""))


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(*names: str) -> Rig:
        rigs.append(Rig(*names))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


async def test_unload_then_load_tell_the_poller_and_answer_at_the_state(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("a", "b")
    rig.state("b", 1, State.AVAILABLE)
    async with anyio.create_task_group() as tg:
        unloaded = anyio.Event()

        async def unload() -> None:
            await rig.watcher.unload_model("b")
            unloaded.set()

        tg.start_soon(unload)
        assert watched(await rig.received.receive()) == ["a"]  # b is no longer aspired; its entry stays
        await anyio.wait_all_tasks_blocked()
        assert not unloaded.is_set()  # answers only once every version of b reached END
        rig.state("b", 1, State.UNLOADING)
        await anyio.wait_all_tasks_blocked()
        assert not unloaded.is_set()
        rig.state("b", 1, State.END)
        await unloaded.wait()
    assert rig.watcher.served_names() == ("a",)
    assert await rig.watcher.repository_models() == (("a", "b"), frozenset({"b"}))

    async with anyio.create_task_group() as tg:
        loaded = anyio.Event()

        async def load() -> None:
            await rig.watcher.load_model("b")
            loaded.set()

        tg.start_soon(load)
        assert watched(await rig.received.receive()) == ["a", "b"]
        await anyio.wait_all_tasks_blocked()
        assert not loaded.is_set()  # the END from before the load does not count
        rig.state("b", 1, State.LOADING)
        rig.state("b", 1, State.AVAILABLE)
        await loaded.wait()
    assert rig.watcher.served_names() == ("a", "b")


async def test_a_failed_load_is_an_error(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("a")
    await rig.watcher.unload_model("a")  # no version seen: answers at once
    await rig.received.receive()
    errors: list[ServingError] = []

    async def load() -> None:
        try:
            await rig.watcher.load_model("a")
        except ServingError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(load)
        await rig.received.receive()
        rig.state("a", 1, State.LOADING)
        rig.state("a", 1, State.END, Code.NOT_FOUND)
    (error,) = errors
    assert error.code is Code.UNKNOWN
    assert "did not become available" in error.message
    assert "NOT_FOUND: boom" in error.message


async def test_only_configured_models(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("a")
    for call in (rig.watcher.load_model, rig.watcher.unload_model):
        with pytest.raises(ServingError) as info:
            await call("nope")
        assert info.value.code is Code.NOT_FOUND


async def test_a_later_config_keeps_an_unload_and_a_config_without_the_model_forgets_it(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig("a", "b")
    await rig.watcher.unload_model("b")
    assert watched(await rig.received.receive()) == ["a"]
    await rig.watcher.reload(config("a", "b", "c"), wait=False)  # a file poll adding c
    assert watched(await rig.received.receive()) == ["a", "c"]  # b stays unloaded
    assert rig.watcher.unloaded == {"b"}
    await rig.watcher.reload(config("a", "c"), wait=False)  # b left the config: its unload is forgotten
    assert watched(await rig.received.receive()) == ["a", "c"]
    assert rig.watcher.unloaded == set()
    await rig.watcher.reload(config("a", "b", "c"), wait=False)  # added again: loads normally
    assert watched(await rig.received.receive()) == ["a", "b", "c"]
