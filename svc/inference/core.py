"""What every request implementation shares: the server's `Core`, ModelSpec resolution to a leased servable,
and the one awaited run through the batcher.

Each API is one pure *prepare* step (wire message + servable -> `Task`: feed arrays, fetch names and what the
finish step needs, with all of TF Serving's validation and texts), one `run` through the batcher, and one
pure *finish* step (fetched arrays -> response). The gRPC and REST frontends call the APIs of
`svc.inference.predict` / `classify_regress` / `model_info` / `model_management`; warmup calls the same
prepare and finish steps around the servable's own `run` (the batcher's runner), because it runs before the
version is in the serving map (TF Serving's warmup calls the same `RunPredict`, `RunClassify`, ...).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from tensorflow_serving.apis import model_pb2
from tensorflow_serving.config import model_server_config_pb2

from svc.batching.scheduler import Batcher
from svc.errors import invalid_argument
from svc.lifecycle.serving_map import ServingMapHolder
from svc.lifecycle.state_monitor import StateMonitor
from svc.metrics import Metrics
from svc.request_context import current_request
from svc.servables.saved_model import Servable
from svc.types import MAX_ELEMENTS, Array

DEFAULT_SIGNATURE = "serving_default"


class Reloader(Protocol):
    async def reload(self, config: model_server_config_pb2.ModelServerConfig, *, request: bool = False) -> None: ...


@dataclass(slots=True)
class Core:
    """What the request implementations need; one per server."""

    serving_map: ServingMapHolder[Servable]
    monitor: StateMonitor
    batcher: Batcher
    tensor_content: bool = False
    max_tensor_elements: int = MAX_ELEMENTS
    signature_method_name_check: bool = False  # --enable_signature_method_name_check
    reloader: Reloader | None = None
    metrics: Metrics | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """A ModelSpec resolved to what the serving map looks up."""

    name: str
    version: int | None = None
    label: str | None = None

    def model_spec(self, signature_name: str = "") -> model_pb2.ModelSpec:
        """The ModelSpec of a REST call: the URL's model, version or label, and the body's signature name."""
        spec = model_pb2.ModelSpec(name=self.name, signature_name=signature_name)
        if self.version is not None:
            spec.version.value = self.version
        elif self.label is not None:
            spec.version_label = self.label
        return spec


def target_of(spec: model_pb2.ModelSpec) -> Target:
    if not spec.name:
        raise invalid_argument("ModelSpec has no name specified.")
    match spec.WhichOneof("version_choice"):
        case "version":
            return Target(spec.name, version=spec.version.value)
        case "version_label":
            return Target(spec.name, label=spec.version_label)  # "" is a label too, as in TF
        case _:
            return Target(spec.name)


def signature_name_or_default(name: str) -> str:
    return name or DEFAULT_SIGNATURE


@contextmanager
def lease(core: Core, target: Target) -> Iterator[Servable]:
    """Hold the version `target` resolves to for the block (TF's `GetServableHandle`): it does not unload
    while held. Raises TF Serving's NOT_FOUND / INVALID_ARGUMENT when nothing matches."""
    with core.serving_map.acquire(target.name, target.version, target.label) as servable:
        note_version(servable)
        yield servable


def note_version(servable: Servable) -> None:
    """The request log's `version`: the version that answers."""
    record = current_request.get()
    if record is not None:
        record.version = servable.version


def note_signature(signature_name: str) -> None:
    record = current_request.get()
    if record is not None:
        record.signature = signature_name_or_default(signature_name)


@dataclass(frozen=True, slots=True)
class Task:
    """What one run feeds and fetches (tensor names), as the batcher and `Servable.run` take them."""

    feeds: dict[str, Array]
    fetches: list[str]


async def run(
    core: Core, servable: Servable, task: Task, *, deadline: float | None = None, api: str | None = None
) -> list[Array]:
    """The one awaited run of every API: through the batcher, on the inference threads. `api` names TF
    Serving's runtime-latency series when the API records one."""
    started = time.perf_counter()
    outputs = await core.batcher.submit(servable, task.feeds, task.fetches, deadline=deadline)
    if api is not None and core.metrics is not None:
        core.metrics.runtime(servable.name, api, time.perf_counter() - started)
    return outputs


def run_now(servable: Servable, task: Task) -> list[Array]:
    """The same run without the batcher, in the caller's thread (warmup, before the version serves)."""
    return servable.run(task.feeds, task.fetches)
