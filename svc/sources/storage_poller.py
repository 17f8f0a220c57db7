"""StoragePoller: lists every model's base path and announces its aspired versions.

Mirrors TF Serving's `sources/storage_path/file_system_storage_path_source.cc`: every
`--file_system_poll_wait_seconds` (0 = once, negative = only when the configuration changes) each model's
base path is listed in a thread (models in parallel), its version policy applied, and the complete aspired set
sent to the VersionManager when it changed. Unlike TF Serving, only *published* versions are aspired — complete,
and unchanged across two polls or marked ready (`svc/sources/publication.py` has the rules, including the first-poll
exception) — and a storage error or a listing that suddenly turns empty is *unknown*, not *deleted*: nothing is
unloaded, a warning is logged, `poll_errors` counts it, and the next poll tries again. Repeated failures of one
model are logged at the 1st, 2nd, 4th, 8th, ... consecutive failure, and its recovery once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from svc.lifecycle.messages import (
    AspiredVersions,
    LabelsChanged,
    ManagerInbox,
    ModelConfigs,
    ModelRemoved,
    ModelSource,
)
from svc.lifecycle.policy import Selection
from svc.logging import get_logger
from svc.sources.publication import Inspection, ListingVerdict, Publication, keras_refusal
from svc.sources.storage import Storage, StorageError, storage_for

log = get_logger(actor="storage_poller")

StorageFactory = Callable[[str], Storage]


@dataclass(frozen=True, slots=True)
class ModelPoll:
    """The outcome of one poll of one model (computed in a thread, logged and sent on the event loop)."""

    error: str | None = None
    verdict: ListingVerdict = ListingVerdict.OK
    duplicates: tuple[str, ...] = ()
    inspections: tuple[Inspection, ...] = ()
    selection: Selection | None = None
    keras_files: tuple[str, ...] = ()  # Keras files at the base path (refused: only SavedModels are served)


@dataclass(frozen=True, slots=True)
class PollerStatistics:
    polls: int
    poll_errors: int  # failed listings and sudden empty listings (the "unknown" polls), all models
    failing_models: tuple[str, ...]  # models whose last poll was unknown


def poll_model(storage: StorageFactory, model: ModelSource, publication: Publication) -> ModelPoll:
    """List one model's base path and the files of the versions that may become eligible. Blocking."""
    try:
        listing = storage(model.base_path).list_versions(model.base_path)
        verdict = publication.observe_listing(listing.versions)
        if verdict is ListingVerdict.UNKNOWN:
            return ModelPoll(verdict=verdict, duplicates=listing.duplicates, keras_files=listing.keras_files)
        if verdict is ListingVerdict.EMPTY:
            return ModelPoll(verdict=verdict, duplicates=listing.duplicates, selection=Selection(()),
                             keras_files=listing.keras_files)
        inspections = []
        for version in publication.to_inspect(model.policy):
            path = listing.versions[version]
            inspections.append(publication.observe_files(version, storage(path).list_files(path)))
    except StorageError as exc:
        publication.observe_error()
        return ModelPoll(error=str(exc))
    return ModelPoll(
        duplicates=listing.duplicates,
        inspections=tuple(inspections),
        selection=publication.selection(model.policy),
        keras_files=listing.keras_files,
    )


class StoragePoller:
    def __init__(
        self,
        inbox: ObjectReceiveStream[ModelConfigs],
        manager: ObjectSendStream[ManagerInbox],
        poll_wait_seconds: float,
        storage: StorageFactory = storage_for,
        *,
        ready_marker: str = "",
        max_concurrent_listings: int = 16,
    ) -> None:
        self._inbox = inbox
        self._manager = manager
        self._poll_wait = poll_wait_seconds
        self._storage = storage
        self._marker = ready_marker
        self._limiter = anyio.CapacityLimiter(max(max_concurrent_listings, 1))
        self._models: dict[str, ModelSource] = {}
        self._publications: dict[str, Publication] = {}
        self._sent: dict[str, tuple[int, ...]] = {}
        self._failures: dict[str, int] = {}  # consecutive unknown polls per model
        self._duplicates: dict[str, tuple[str, ...]] = {}
        self._keras_files: dict[str, tuple[str, ...]] = {}
        self._missing: dict[str, tuple[int, ...]] = {}
        self._empty: set[str] = set()
        self.poll_errors = 0
        self.polls = 0

    def statistics(self) -> PollerStatistics:
        failing = tuple(sorted(name for name, n in self._failures.items() if n))
        return PollerStatistics(self.polls, self.poll_errors, failing)

    async def run(self) -> None:
        async with self._inbox, self._manager:
            configs = await self._inbox.receive()
            while True:
                await self.apply(configs)
                await self.poll()
                interval = self._poll_wait if self._poll_wait > 0 else math.inf
                next_configs = None
                while next_configs is None:
                    with anyio.move_on_after(interval):
                        next_configs = await self._inbox.receive()
                    if next_configs is None:
                        await self.poll()
                configs = next_configs

    async def apply(self, configs: ModelConfigs) -> None:
        """Watch exactly these models from now on (models left out are removed; a new base path starts over)."""
        new = {m.name: m for m in configs.models}
        for name in self._models.keys() - new.keys():
            self._forget(name)
            await self._manager.send(ModelRemoved(name))
        for name, model in new.items():
            old = self._models.get(name)
            if old is None or old.labels != model.labels:
                await self._manager.send(LabelsChanged(name, model.labels))
            if old is not None and old.policy != model.policy:
                self._sent.pop(name, None)
            if old is None or old.base_path != model.base_path:
                self._forget(name)
                self._publications[name] = Publication(self._marker)
        self._models = new

    def _forget(self, name: str) -> None:
        for table in (
            self._publications, self._sent, self._failures, self._duplicates, self._missing, self._keras_files
        ):
            table.pop(name, None)
        self._empty.discard(name)

    async def poll(self) -> None:
        """One poll of every model; the listings run in threads, models in parallel."""
        self.polls += 1
        async with anyio.create_task_group() as tg:
            for model in list(self._models.values()):
                tg.start_soon(self._poll_one, model)
        log.debug("storage_polled", polls=self.polls)  # a poll happened: what tests wait on

    async def _poll_one(self, model: ModelSource) -> None:
        publication = self._publications[model.name]
        result = await anyio.to_thread.run_sync(
            poll_model, self._storage, model, publication, limiter=self._limiter
        )
        if model.name not in self._publications:  # removed from the configuration meanwhile
            return
        if result.error is not None:
            self._unknown(model, result)
            return
        self._log_duplicates(model, result.duplicates)
        self._log_keras_files(model, result.keras_files)
        if result.verdict is ListingVerdict.UNKNOWN:
            self._unknown(model, result)
            return
        failures = self._failures.pop(model.name, 0)
        if failures:
            log.info("storage_poll_recovered", model=model.name, base_path=model.base_path, failures=failures)
        for inspection in result.inspections:
            self._log_inspection(model, inspection)
        if result.verdict is ListingVerdict.EMPTY:
            if model.name not in self._empty:
                self._empty.add(model.name)
                log.warning(
                    "no_versions_found", model=model.name, base_path=model.base_path,
                    message=f"No versions of servable {model.name} found under base path "
                    f"{model.base_path}. Did you forget to name your leaf directory as a number (eg. '/1/')?",
                )
        else:
            self._empty.discard(model.name)
        if result.selection is None:
            return  # versions are being written and none is publishable yet: keep what is aspired
        if self._missing.get(model.name, ()) != result.selection.missing:
            self._missing[model.name] = result.selection.missing
            for version in result.selection.missing:
                log.warning("specific_version_not_found", model=model.name, version=version)
        await self._announce(model.name, AspiredVersions(model.name, result.selection.aspired))

    def _unknown(self, model: ModelSource, result: ModelPoll) -> None:
        self.poll_errors += 1
        failures = self._failures[model.name] = self._failures.get(model.name, 0) + 1
        if failures & (failures - 1):  # log the 1st, 2nd, 4th, 8th, ... consecutive failure
            return
        if result.error is not None:
            log.warning(
                "storage_poll_failed", model=model.name, base_path=model.base_path, error=result.error,
                consecutive_failures=failures,
                message=f"FileSystemStoragePathSource encountered a filesystem access error: {result.error}",
            )
        else:
            log.warning(
                "storage_listing_suddenly_empty", model=model.name, base_path=model.base_path,
                consecutive_failures=failures,
                message="No version listed where versions were published: treated as unknown, "
                "the loaded versions keep serving",
            )

    def _log_duplicates(self, model: ModelSource, duplicates: tuple[str, ...]) -> None:
        if self._duplicates.get(model.name, ()) == duplicates:
            return
        self._duplicates[model.name] = duplicates
        for name in duplicates:
            log.warning("duplicate_version_directory", model=model.name, base_path=model.base_path,
                        directory=name)

    def _log_keras_files(self, model: ModelSource, paths: tuple[str, ...]) -> None:
        if self._keras_files.get(model.name, ()) == paths:
            return
        self._keras_files[model.name] = paths
        for path in paths:
            log.warning("keras_file_refused", model=model.name, base_path=model.base_path, path=path,
                        message=keras_refusal(path))

    def _log_inspection(self, model: ModelSource, inspection: Inspection) -> None:
        if not inspection.reported:
            return
        if inspection.refused:
            log.warning("keras_file_refused", model=model.name, base_path=model.base_path,
                        version=inspection.version, message=inspection.reason)
        elif inspection.published:
            log.info("version_published", model=model.name, version=inspection.version)
        else:
            log.info("version_not_ready", model=model.name, version=inspection.version, reason=inspection.reason)

    async def _announce(self, name: str, message: AspiredVersions) -> None:
        versions = tuple(v.version for v in message.versions)
        if self._sent.get(name) == versions:
            return
        self._sent[name] = versions
        await self._manager.send(message)
