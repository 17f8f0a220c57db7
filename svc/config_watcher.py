"""ConfigWatcher: turns the ModelServerConfig into the models the poller watches, and re-reads it.

Mirrors TF Serving's `ServerCore::ReloadConfig` entry points: the config file is read at start and, with
`--model_config_file_poll_wait_seconds` > 0, re-read every N seconds; a changed, valid config replaces the
old one whole (models left out are unloaded). A file that fails to parse or validate is logged and ignored,
as TF Serving does (`Failed to read ModelServerConfig file: ...`).
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from anyio.abc import ObjectSendStream
from tensorflow_serving.config import model_server_config_pb2

from svc.errors import ServingError
from svc.logging import get_logger
from svc.messages import ModelConfigs, ModelSource, VersionPolicy

log = get_logger(actor="config_watcher")

Config = model_server_config_pb2.ModelServerConfig


def model_sources(config: Config) -> ModelConfigs:
    """The poller's view of a validated ModelConfigList."""
    models = []
    for model in config.model_config_list.config:
        policy = model.model_version_policy
        match policy.WhichOneof("policy_choice"):
            case "all":
                version_policy = VersionPolicy("all")
            case "specific":
                version_policy = VersionPolicy("specific", versions=tuple(policy.specific.versions))
            case "latest":
                version_policy = VersionPolicy("latest", num_versions=max(policy.latest.num_versions, 1))
            case _:
                version_policy = VersionPolicy()
        labels = tuple(sorted(model.version_labels.items()))
        models.append(ModelSource(model.name, model.base_path, version_policy, labels))
    return ModelConfigs(tuple(models))


class ConfigWatcher:
    def __init__(
        self,
        out: ObjectSendStream[ModelConfigs],
        initial: Config,
        reload: Callable[[Config], Config] | None = None,
        poll_wait_seconds: float = 0,
    ) -> None:
        """`reload(previous)` re-reads and validates the file, raising ServingError on a bad one."""
        self._out = out
        self.current = initial
        self._reload = reload
        self._poll_wait = poll_wait_seconds

    async def run(self) -> None:
        async with self._out:
            await self._out.send(model_sources(self.current))
            if self._reload is None or self._poll_wait <= 0:
                await anyio.sleep_forever()
            while True:
                await anyio.sleep(self._poll_wait)
                try:
                    config = await anyio.to_thread.run_sync(self._reload, self.current)
                except ServingError as exc:
                    log.error("model_config_reload_failed", error=exc.message,
                              message=f"Failed to read ModelServerConfig file: {exc.message}")
                    continue
                await self.apply(config)

    async def apply(self, config: Config) -> None:
        if config == self.current:
            return
        self.current = config
        log.info("model_config_changed", models=[m.name for m in config.model_config_list.config])
        await self._out.send(model_sources(config))
