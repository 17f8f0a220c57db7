"""Batcher: where inference requests queue for the inference thread pool.

Every request reaches TensorFlow through here, off the event loop, on a pool of `num_batch_threads`
threads (TF Serving's shared batch scheduler threads). This version runs each task as a batch of one, the
path TF Serving takes without `--enable_batching`; merging tasks into batches builds on this interface.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anyio

from svc.servable import Array, Servable


class Batcher:
    def __init__(self, num_threads: int) -> None:
        self._limiter = anyio.CapacityLimiter(max(num_threads, 1))
        self.tasks_run = 0

    async def submit(self, servable: Servable, feeds: Mapping[str, Array], fetches: Sequence[str]) -> list[Array]:
        """Run one task (feeds by tensor name, fetches by tensor name) and return its outputs."""
        outputs = await anyio.to_thread.run_sync(servable.run, feeds, fetches, limiter=self._limiter)
        self.tasks_run += 1
        return outputs
