"""StoragePoller: lists every model's base path and announces its aspired versions.

Mirrors TF Serving's `sources/storage_path/file_system_storage_path_source.cc`: every
`--file_system_poll_wait_seconds` (0 = once, negative = only when the configuration changes) each model's
base path is listed in a thread, its version policy applied, and the complete aspired set sent to the
VersionManager. Unlike TF Serving, a storage error or a listing that suddenly turns empty is *unknown*, not
*deleted*: nothing is unloaded, a warning is logged and the next poll tries again.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from svc.logging import get_logger
from svc.messages import AspiredVersions, LabelsChanged, ManagerInbox, ModelConfigs, ModelRemoved, ModelSource
from svc.policy import select_versions
from svc.storage import Listing, Storage, StorageError, storage_for

log = get_logger(actor="storage_poller")


class StoragePoller:
    def __init__(
        self,
        inbox: ObjectReceiveStream[ModelConfigs],
        manager: ObjectSendStream[ManagerInbox],
        poll_wait_seconds: float,
        storage: Callable[[str], Storage] = storage_for,
    ) -> None:
        self._inbox = inbox
        self._manager = manager
        self._poll_wait = poll_wait_seconds
        self._storage = storage
        self._models: dict[str, ModelSource] = {}
        self._sent: dict[str, tuple[int, ...]] = {}
        self.poll_errors = 0
        self.polls = 0

    async def run(self) -> None:
        async with self._inbox, self._manager:
            configs = await self._inbox.receive()
            while True:
                await self._apply(configs)
                await self.poll()
                interval = self._poll_wait if self._poll_wait > 0 else math.inf
                next_configs = None
                while next_configs is None:
                    with anyio.move_on_after(interval):
                        next_configs = await self._inbox.receive()
                    if next_configs is None:
                        await self.poll()
                configs = next_configs

    async def _apply(self, configs: ModelConfigs) -> None:
        new = {m.name: m for m in configs.models}
        for name in self._models.keys() - new.keys():
            self._sent.pop(name, None)
            await self._manager.send(ModelRemoved(name))
        for name, model in new.items():
            old = self._models.get(name)
            if old is None or old.labels != model.labels:
                await self._manager.send(LabelsChanged(name, model.labels))
            if old is not None and (old.policy != model.policy or old.base_path != model.base_path):
                self._sent.pop(name, None)
        self._models = new

    async def poll(self) -> None:
        """One poll of every model; the listing runs in a thread."""
        self.polls += 1
        for model in list(self._models.values()):
            try:
                listing = await anyio.to_thread.run_sync(self._list, model.base_path)
            except StorageError as exc:
                self.poll_errors += 1
                log.error("storage_poll_failed", model=model.name, base_path=model.base_path, error=str(exc))
                continue
            for name in listing.duplicates:
                log.warning("duplicate_version_directory", model=model.name, directory=name)
            if not listing.versions:
                if self._sent.get(model.name):
                    self.poll_errors += 1
                    log.warning("storage_listing_suddenly_empty", model=model.name, base_path=model.base_path)
                else:
                    log.warning(
                        "no_versions_found", model=model.name, base_path=model.base_path,
                        message=f"No versions of servable {model.name} found under base path "
                        f"{model.base_path}. Did you forget to name your leaf directory as a number "
                        "(eg. '/1/')?",
                    )
                    await self._announce(model.name, AspiredVersions(model.name, ()))
                continue
            selection = select_versions(listing.versions, model.policy)
            for version in selection.missing:
                log.warning("specific_version_not_found", model=model.name, version=version)
            await self._announce(model.name, AspiredVersions(model.name, selection.aspired))

    async def _announce(self, name: str, message: AspiredVersions) -> None:
        versions = tuple(v.version for v in message.versions)
        if self._sent.get(name) == versions:
            return
        self._sent[name] = versions
        await self._manager.send(message)

    def _list(self, base_path: str) -> Listing:
        return self._storage(base_path).list_versions(base_path)
