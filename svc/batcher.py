"""Batcher: where inference requests queue for the inference thread pool.

Every request reaches TensorFlow through here, off the event loop, on a pool of `num_batch_threads`
threads (TF Serving's shared batch scheduler threads). This version runs each task as a batch of one, the
path TF Serving takes without `--enable_batching`; merging tasks into batches builds on this interface.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anyio

from svc.errors import Code, ServingError
from svc.servable import Array, Servable


class Batcher:
    def __init__(self, num_threads: int) -> None:
        self._limiter = anyio.CapacityLimiter(max(num_threads, 1))
        self.tasks_run = 0

    async def submit(
        self,
        servable: Servable,
        feeds: Mapping[str, Array],
        fetches: Sequence[str],
        *,
        deadline: float | None = None,
    ) -> list[Array]:
        """Run one task (feeds by tensor name, fetches by tensor name) and return its outputs.

        `deadline` is an `anyio.current_time()` instant after which the task must not start.
        """
        if deadline is not None and anyio.current_time() >= deadline:
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded before the request ran")
        outputs = await anyio.to_thread.run_sync(servable.run, feeds, fetches, limiter=self._limiter)
        self.tasks_run += 1
        return outputs
