"""ConfigWatcher: applies ModelServerConfigs — at start, on `HandleReloadConfigRequest`, and when the config
file changes — and hands the poller the models to watch.

Mirrors TF Serving's `ServerCore::ReloadConfig`: validate the transition, check the version labels, replace
the old config whole (models left out are unloaded, new ones loaded, changed policies and labels applied),
then wait until every newly added model is AVAILABLE or failed. With `--model_config_file_poll_wait_seconds`
> 0 the file is re-read every N seconds; a file that fails to parse or validate is logged and ignored.

Deliberate difference (tfs#1608): a label may name a version that is still loading; it resolves once that
version is AVAILABLE. Labels of models that a config adds (at start-up or on reload) are checked after those
models loaded. TF Serving checks every label before loading anything and refuses a label to a version that is
not yet AVAILABLE (unless `--allow_version_labels_for_unavailable_models`), which makes labels in a config
file break start-up and makes it impossible to add a model together with its labels.

Per-model load and unload (the Open Inference Protocol's repository extension; TF Serving has none):
`unload_model` keeps the model's config entry but aspires no version of it, `load_model` aspires its versions
again; both act only on models of the current config and answer once the state is reached (or failed). An
explicit unload holds until an explicit load: a later config (file poll or ReloadConfig request) that still
lists the model keeps it unloaded and logs `model_kept_unloaded`; a config that drops the model forgets the
unload (logged too), so the model loads normally if a later config adds it again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import anyio
from anyio.abc import ObjectSendStream

from svc.config_files import ModelServerConfig as Config
from svc.config_files import validate_model_server_config
from svc.errors import Code, ServingError, failed_precondition, invalid_argument, not_found
from svc.lifecycle.messages import All, Latest, ModelConfigs, ModelSource, Specific, VersionPolicy
from svc.lifecycle.serving_map import ServingMap, ServingMapHolder
from svc.lifecycle.state_monitor import ModelsSettled, StateMonitor, Table
from svc.lifecycle.states import State
from svc.logging import get_logger

log = get_logger(actor="config_watcher")


def model_sources(config: Config) -> ModelConfigs:
    """The poller's view of a validated ModelConfigList."""
    models = []
    for model in config.model_config_list.config:
        policy = model.model_version_policy
        match policy.WhichOneof("policy_choice"):
            case "all":
                version_policy: VersionPolicy = All()
            case "specific":
                version_policy = Specific(tuple(policy.specific.versions))
            case "latest":
                version_policy = Latest(max(policy.latest.num_versions, 1))
            case _:
                version_policy = Latest()
        labels = tuple(sorted(model.version_labels.items()))
        models.append(ModelSource(model.name, model.base_path, version_policy, labels))
    return ModelConfigs(tuple(models))


def model_names(config: Config) -> tuple[str, ...]:
    return tuple(m.name for m in config.model_config_list.config)


def check_labels(
    config: Config,
    previous: Config | None,
    table: Table,
    allow_unavailable: bool,
    models: Collection[str] | None = None,
) -> None:
    """TF Serving's `UpdateModelVersionLabelMap` check (for `models`, default all), plus labels for versions
    still loading."""
    old_labels: dict[tuple[str, str], int] = {}
    if previous is not None:
        for model in previous.model_config_list.config:
            for label, version in model.version_labels.items():
                old_labels[(model.name, label)] = version
    for model in config.model_config_list.config:
        if models is not None and model.name not in models:
            continue
        versions = table.get(model.name, {})
        for label, version in sorted(model.version_labels.items()):
            state = versions[version].state if version in versions else None
            if state in (State.AVAILABLE, State.START, State.LOADING):
                continue
            if allow_unavailable and old_labels.get((model.name, label), version) == version:
                continue
            raise failed_precondition(
                f"Request to assign label to version {version} of model {model.name}, which is not "
                "currently available for inference"
            )


class ConfigWatcher:
    def __init__(
        self,
        out: ObjectSendStream[ModelConfigs],
        initial: Config,
        monitor: StateMonitor,
        *,
        read_file: Callable[[], Config] | None = None,
        poll_wait_seconds: float = 0,
        allow_labels_for_unavailable: bool = False,
        serving_map: ServingMapHolder[Any] | None = None,
    ) -> None:
        self._out = out
        self.current = initial
        self._monitor = monitor
        self._read_file = read_file
        self._poll_wait = poll_wait_seconds
        self._allow_unavailable = allow_labels_for_unavailable
        self._serving_map = serving_map
        self._lock = anyio.Lock()
        self.unloaded: set[str] = set()  # models explicitly unloaded (repository extension)

    def _sources(self) -> ModelConfigs:
        """What the poller watches: the current config less the explicitly unloaded models."""
        sources = model_sources(self.current)
        return ModelConfigs(tuple(m for m in sources.models if m.name not in self.unloaded))

    async def repository_models(self) -> tuple[tuple[str, ...], frozenset[str]]:
        """The configured model names and the explicitly unloaded ones (the repository index)."""
        return model_names(self.current), frozenset(self.unloaded)

    def served_names(self) -> tuple[str, ...]:
        """The configured models that are meant to serve (readiness waits for these)."""
        return tuple(n for n in model_names(self.current) if n not in self.unloaded)

    async def run(self) -> None:
        async with self._out:
            await self._out.send(self._sources())
            if self._read_file is None or self._poll_wait <= 0:
                await anyio.sleep_forever()
            read_file = self._read_file
            assert read_file is not None
            while True:
                await anyio.sleep(self._poll_wait)
                try:
                    config = await anyio.to_thread.run_sync(read_file)
                except ServingError as exc:
                    log.error("model_config_read_failed", error=exc.message,
                              message=f"Failed to read ModelServerConfig file: {exc.status_text()}")
                    continue
                if config == self.current:
                    continue
                try:
                    # Not waiting for the added models: a model whose base path has no version yet must not
                    # stop the next edits of the file from being applied.
                    await self.reload(config, wait=False)
                except ServingError as exc:
                    log.error("model_config_reload_failed", error=exc.message,
                              message=f"PollFilesystemAndReloadConfig failed to ReloadConfig: {exc.status_text()}")

    def check_startup_labels(self) -> None:
        """Labels of the initial config, checked once the initial models are loaded (fixing tfs#1608)."""
        check_labels(self.current, None, self._monitor.snapshot(), self._allow_unavailable)

    async def reload(self, config: Config, *, request: bool = False, wait: bool = True) -> None:
        """ReloadConfig: apply `config`, then (with `wait`) wait for the models it adds. Raises ServingError."""
        async with self._lock:
            validate_model_server_config(config, self.current, reload_request=request)
            if config == self.current:
                return
            for model in config.model_config_list.config:
                if model.HasField("logging_config"):
                    raise invalid_argument("No request-logger-creator provided.")
            added = tuple(n for n in model_names(config) if n not in set(model_names(self.current)))
            kept = set(model_names(config)) - set(added)
            check_labels(config, self.current, self._monitor.snapshot(), self._allow_unavailable, kept)
            self.current = config
            log.info("model_config_changed", models=list(model_names(config)), added=list(added))
            self._keep_unloaded(config)
            since = self._monitor.events_seen
            await self._out.send(self._sources())
        if not wait:
            return
        await self._wait_for_labels(config)
        settled = ModelsSettled(added, since)
        await self._monitor.wait_until(settled.done)
        failures = settled.failures(self._monitor.snapshot())
        if failures:
            raise ServingError(
                Code.UNKNOWN, f"{len(failures)} model(s) did not become available: {{{''.join(failures)}}}"
            )
        # Labels of models this reload added are checked once their versions had the chance to load.
        check_labels(config, None, self._monitor.snapshot(), self._allow_unavailable, added)

    def _keep_unloaded(self, config: Config) -> None:
        """The unload rule across config changes (see the module docstring); says what it does in the log."""
        names = set(model_names(config))
        dropped = sorted(self.unloaded - names)
        if dropped:
            self.unloaded -= set(dropped)
            log.info("model_unload_forgotten", models=dropped,
                     message="Explicitly unloaded models left the config; a config that adds them loads them")
        if self.unloaded:
            log.warning("model_kept_unloaded", models=sorted(self.unloaded),
                        message="The new config lists models that were explicitly unloaded; they stay unloaded "
                        "until a repository load request")

    def _check_known(self, name: str) -> None:
        if name not in set(model_names(self.current)):
            raise not_found(f"Model {name} is not in the model config; only configured models can be loaded")

    async def load_model(self, name: str) -> None:
        """Aspire a configured model's versions again (after an unload); answers once it is AVAILABLE, or
        raises when its load failed. A model that is not unloaded answers once it has settled."""
        async with self._lock:
            self._check_known(name)
            since = 0
            if name in self.unloaded:
                self.unloaded.discard(name)
                log.info("model_load_requested", model=name)
                since = self._monitor.events_seen
                await self._out.send(self._sources())
        settled = ModelsSettled((name,), since)
        await self._monitor.wait_until(settled.done)
        failures = settled.failures(self._monitor.snapshot())
        if failures:
            raise ServingError(Code.UNKNOWN, f"model {name} did not become available: {''.join(failures)}")
        if not any(s.state is State.AVAILABLE for s in self._monitor.versions(name).values()):
            raise ServingError(Code.UNAVAILABLE, f"model {name} has no version available")

    async def unload_model(self, name: str) -> None:
        """Aspire no version of a configured model (its config entry stays); answers once every version of it
        has reached END."""
        async with self._lock:
            self._check_known(name)
            if name not in self.unloaded:
                self.unloaded.add(name)
                log.info("model_unload_requested", model=name)
                await self._out.send(self._sources())

        def unloaded(table: Table) -> bool:
            return all(s.state is State.END for s in table.get(name, {}).values())

        await self._monitor.wait_until(unloaded)

    async def _wait_for_labels(self, config: Config) -> None:
        """ReloadConfig returns once the config's labels resolve, as `ServerCore::ReloadConfig` swaps the label
        map before it returns (issue 10: a rollout that moves `stable` and predicts by it saw the old map)."""
        if self._serving_map is None:
            return
        wanted = {
            m.name: dict(m.version_labels) for m in config.model_config_list.config if m.name not in self.unloaded
        }

        def in_force(current: ServingMap[Any]) -> bool:
            for name, labels in wanted.items():
                entry = current.models.get(name)
                if dict(entry.labels if entry is not None else {}) != labels:
                    return False
            return True

        with anyio.move_on_after(30):  # the manager applies labels at once; never hang the RPC on it
            await self._serving_map.wait_until(in_force)
