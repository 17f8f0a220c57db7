"""SavedModelLoader: what it takes to turn a version directory into a serving `Servable`, and to undo it.

Mirrors TF Serving's `SavedModelBundleSourceAdapter` loader (`servables/tensorflow/
saved_model_bundle_source_adapter.cc`): copy a remote version to the local cache, load the SavedModel, run
its warmup records (`--enable_model_warmup`), count the attempt in TF Serving's load metrics; unloading
closes the session and evicts the cached copy. The LoaderPool calls `load` and `unload` in its threads, with
its retries; both block.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from svc.lifecycle.messages import ServableId
from svc.logging import get_logger
from svc.metrics import Metrics
from svc.servables.saved_model import Servable, load
from svc.sources.version_cache import VersionCache

log = get_logger(actor="loader")

WarmUp = Callable[[Servable, str], int]
"""Replays a freshly loaded version's warmup records (from its local directory); returns how many ran."""


@dataclass(frozen=True, slots=True)
class SavedModelLoader:
    tags: Sequence[str]
    session_config: Any
    cache: VersionCache
    metrics: Metrics
    warm_up: WarmUp | None = None  # None: --enable_model_warmup=false
    version_batching: Callable[[str], object] | None = None  # the version's own batching policy, from its dir

    def load(self, id: ServableId, path: str) -> Servable:
        """Blocking; raises (ServingError, or whatever TensorFlow raised) after counting the failed attempt."""
        started = time.perf_counter()
        try:
            local = self.cache.materialize(path)
            try:
                own_policy = self.version_batching(local) if self.version_batching is not None else None
                servable = load(id.name, id.version, local, self.tags, self.session_config)
                servable.batching_policy = own_policy
                try:
                    self._warm_up(servable, local)
                except BaseException:
                    servable.close()
                    raise
            except BaseException:
                self.cache.evict(local)
                raise
        except Exception:  # the LoaderPool turns any exception into LoadFailed (issue 10)
            self.metrics.load(id.name, id.version, path, time.perf_counter() - started, ok=False)
            raise
        self.metrics.load(id.name, id.version, path, time.perf_counter() - started, ok=True)
        return servable

    def unload(self, id: ServableId, servable: Servable) -> None:
        """Blocking: close the session, drop the cached copy (also when the session fails to close)."""
        try:
            servable.close()
        finally:
            self.cache.evict(servable.path)

    def _warm_up(self, servable: Servable, local: str) -> None:
        if self.warm_up is None:
            return
        started = time.perf_counter()
        count = self.warm_up(servable, local)
        if count:
            log.info("servable_warmed_up", model=servable.name, version=servable.version, requests=count,
                     seconds=round(time.perf_counter() - started, 3))
