"""Batcher: where inference requests queue, merge into batches, and reach TensorFlow on the inference pool.

Mirrors TF Serving's `batching/batching_session.cc` over TensorFlow's `SharedBatchScheduler` (the pure
tensor work and the policy are in `svc/batching/batch_util.py`): one queue per
(servable version, tensor signature = sorted feed names + fetch names), created on first use; a batch closes
when it is full or its oldest task has waited `batch_timeout_micros`, and runs once one of
`num_batch_threads` is free; inputs are concatenated along dimension 0, padded up to an allowed batch size
with the first row of the last task, and outputs are sliced back per task (padding rows dropped). Large tasks
are split with `enable_large_batch_splitting`. Without `--enable_batching` every task is a batch of one on
the same path. Tasks without a batch dimension (no inputs, or only scalars: stateful signatures such as
`saved_model_counter`'s) never merge; with batching on they run one at a time per queue, in arrival order.

Deliberate differences: an expired task is answered DEADLINE_EXCEEDED (TF: RESOURCE_EXHAUSTED for a whole
expired batch) and a caller that goes away takes its task out of the queue; inputs of different dtypes never
share a queue (TF would fail the whole merged batch); zero-input and scalar tasks run unbatched instead of
failing `Batching Run() must have at least one input tensor` / `... at least one dimension`.

There are no background tasks: the caller owning the oldest queued task leads its queue. The leader waits
until the head batch may close, takes a thread token, takes the batch and runs it in a child task of its own
task group; it hands the lead on as soon as none of its own tasks is queued. TensorFlow runs in
`anyio.to_thread.run_sync`, never on the event loop.
"""

from __future__ import annotations

import enum
import math
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import numpy as np

from svc.batching.batch_util import (
    BatchingPolicy,
    batching_policy,
    merge_inputs,
    padded_size,
    split_outputs,
    split_sizes,
    task_size,
)
from svc.errors import Code, ServingError, invalid_argument
from svc.logging import get_logger
from svc.request_context import current_request
from svc.types import Array

__all__ = ["Batcher", "BatcherStatistics", "BatchingPolicy", "QueueStatistics", "Runner", "batching_policy"]

log = get_logger(actor="batcher")

QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"
QUEUE_TIMEOUT = "Run() timeout exceeded while waiting in batching queue"
RUN_TIMEOUT = "Run() timeout exceeded while the batch was running"


class Runner(Protocol):
    """What the batcher runs: `svc.servables.saved_model.Servable` (tests pass fakes)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    def run(
        self, feeds: Mapping[str, Array], fetches: Sequence[str], timeout_ms: int | None = None
    ) -> list[Array]: ...


# --- statistics ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    model: str
    version: int
    lane: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    queued_tasks: int
    queued_batches: int
    running_batches: int
    batches_run: int
    tasks_run: int
    rows_run: int
    padding_rows: int


@dataclass(frozen=True, slots=True)
class BatcherStatistics:
    """A snapshot: live queues, and totals since start. `rows_run` excludes padding rows."""

    queues: tuple[QueueStatistics, ...]
    batches_run: int
    tasks_run: int
    rows_run: int
    padding_rows: int
    rejected: int
    expired: int
    cancelled: int

    @property
    def mean_batch_size(self) -> float:
        return self.rows_run / self.batches_run if self.batches_run else 0.0


# --- queue state (event loop only) --------------------------------------------------------------------------


class Lane(enum.Enum):
    BATCHED = "batched"  # merged into batches
    SINGLE = "single"  # a batch of one (no --enable_batching)
    SERIAL = "serial"  # a batch of one, one at a time, in order (no batch dimension)


class _Call:
    """One `submit()`: its pieces (several when split), their outputs, and the caller's wake-up event."""

    __slots__ = (
        "batch_size",
        "deadline",
        "enqueued_at",
        "error",
        "fetch_index",
        "outputs",
        "pending",
        "remaining",
        "runner",
        "wake",
    )

    def __init__(self, runner: Runner, deadline: float | None, n_pieces: int) -> None:
        self.runner = runner
        self.deadline = deadline
        self.enqueued_at = anyio.current_time()
        self.batch_size = 0  # rows of the (last) batch that ran it, for the request log
        self.fetch_index: list[int] = []
        self.outputs: list[list[Array] | None] = [None] * n_pieces
        self.pending = n_pieces  # pieces still queued
        self.remaining = n_pieces  # pieces without outputs
        self.error: ServingError | None = None
        self.wake = anyio.Event()

    @property
    def done(self) -> bool:
        return self.error is not None or self.remaining == 0


@dataclass(slots=True, eq=False)
class _Piece:
    call: _Call
    index: int
    feeds: Mapping[str, Array]
    size: int


@dataclass(slots=True, eq=False)
class _Batch:
    pieces: list[_Piece]
    size: int = 0
    opened_at: float = 0.0
    queued: list[float] = field(default_factory=list)  # seconds each piece waited, once taken


class _Queue:
    __slots__ = (
        "batches",
        "batches_run",
        "feeds",
        "fetches",
        "lane",
        "leader",
        "model",
        "padding_rows",
        "policy",
        "rows_run",
        "running",
        "tasks_run",
        "version",
        "waiting",
    )

    def __init__(
        self, runner: Runner, lane: Lane, feeds: tuple[str, ...], fetches: tuple[str, ...], policy: BatchingPolicy
    ) -> None:
        self.model, self.version = runner.name, runner.version  # no reference: queues die with the servable
        self.policy = policy  # the server's, or the version's own batching_params.pbtxt
        self.lane, self.feeds, self.fetches = lane, feeds, fetches
        self.batches: deque[_Batch] = deque()
        self.leader: _Call | None = None
        self.running = self.batches_run = self.tasks_run = self.rows_run = self.padding_rows = 0
        self.waiting = 0  # batching off: tasks waiting for an inference thread

    def head(self) -> _Batch | None:
        while len(self.batches) > 1 and not self.batches[0].pieces:
            self.batches.popleft()
        return self.batches[0] if self.batches and self.batches[0].pieces else None


QueueKey = tuple[Lane, tuple[str, ...], tuple[str, ...], tuple[str, ...]]
BatchObserver = Callable[[str, int, int, Sequence[float]], None]


class Batcher:
    def __init__(self, policy: BatchingPolicy | int, observe: BatchObserver | None = None) -> None:
        """`observe(model, version, rows, queued_seconds)` is told of every batch run (`Metrics.batch`)."""
        self.policy = policy if isinstance(policy, BatchingPolicy) else BatchingPolicy(max(policy, 1))
        self._observe = observe
        self._tokens = anyio.CapacityLimiter(self.policy.num_batch_threads)  # taken before a batch closes
        self._threads = anyio.CapacityLimiter(self.policy.num_batch_threads)  # never waits: one per token
        self._queues: weakref.WeakKeyDictionary[Any, dict[QueueKey, _Queue]] = weakref.WeakKeyDictionary()
        self._totals = {
            "batches_run": 0,
            "tasks_run": 0,
            "rows_run": 0,
            "padding_rows": 0,
            "rejected": 0,
            "expired": 0,
            "cancelled": 0,
        }

    async def submit(
        self,
        servable: Runner,
        feeds: Mapping[str, Array],
        fetches: Sequence[str],
        *,
        deadline: float | None = None,
    ) -> list[Array]:
        """Run one task (feeds by tensor name, fetches by tensor name) and return its outputs in fetch order.

        `deadline` is an `anyio.current_time()` instant after which the task must not start; a cancelled
        caller's queued task is removed.
        """
        if deadline is not None and anyio.current_time() >= deadline:
            self._totals["expired"] += 1
            raise ServingError(Code.DEADLINE_EXCEEDED, QUEUE_TIMEOUT)
        policy = self.policy_for(servable)
        lane, size = self._lane(policy, feeds)
        queue = self._queue(servable, lane, feeds, fetches, policy)
        if lane is Lane.SINGLE:
            return await self._single(queue, servable, feeds, fetches, size, deadline)
        sizes = self._admit(queue, size)
        if (lane is Lane.BATCHED and len(sizes) == 1 and not queue.batches and queue.leader is None
                and not policy.batch_timeout_micros):
            outputs = await self._solo(queue, servable, feeds, size, deadline)
            if outputs is not None:
                return [outputs[queue.fetches.index(f)] for f in fetches]
        call = _Call(servable, deadline, len(sizes))
        call.fetch_index = [queue.fetches.index(f) for f in fetches]
        self._place(queue, call, feeds, sizes)
        scope = anyio.CancelScope(deadline=math.inf if deadline is None else deadline)
        try:
            with scope:
                await self._serve(queue, call)
        finally:
            queued = self._abandon(queue, call)
            if not call.done:
                self._totals["expired" if scope.cancelled_caught else "cancelled"] += 1
        if call.error is not None:
            raise call.error
        if not call.done:
            raise ServingError(Code.DEADLINE_EXCEEDED, QUEUE_TIMEOUT if queued else RUN_TIMEOUT)
        record = current_request.get()
        if record is not None:
            record.batch_size = call.batch_size
        parts = [p for p in call.outputs if p is not None]
        outputs = (
            parts[0] if len(parts) == 1 else [np.concatenate(o, axis=0) for o in zip(*parts, strict=True)]
        )
        return [outputs[i] for i in call.fetch_index]

    async def _single(
        self, queue: _Queue, runner: Runner, feeds: Mapping[str, Array], fetches: Sequence[str], rows: int,
        deadline: float | None,
    ) -> list[Array]:
        """Batching off: the task runs as soon as an inference thread is free, in the caller's task (no queue
        leader, task group or wake-ups: ~50 us less per request, issue 11). As a batch of one: the same
        thread bound, deadline texts, statistics and batch metrics."""
        token = object()
        enqueued = anyio.current_time()
        try:
            self._tokens.acquire_on_behalf_of_nowait(token)  # a free thread and no one waiting: no scope
        except anyio.WouldBlock:
            await self._wait_token(queue, token, deadline)
        outputs = await self._run_alone(queue, runner, feeds, rows, deadline, enqueued, token)
        return [outputs[queue.fetches.index(f)] for f in fetches]

    async def _solo(
        self, queue: _Queue, runner: Runner, feeds: Mapping[str, Array], rows: int, deadline: float | None
    ) -> list[Array] | None:
        """A batch of its own, at once, when the batch timeout is 0, nothing is queued and an inference thread is
        free (TF's scheduler closes such a batch at once too), without leading the queue: no task group, child
        task or wake-ups (issue 11: ~1/4 of a lone request's CPU with batching on). None when no thread is free:
        the task queues and batches as usual."""
        token = object()
        try:
            self._tokens.acquire_on_behalf_of_nowait(token)
        except anyio.WouldBlock:
            return None
        return await self._run_alone(queue, runner, feeds, rows, deadline, anyio.current_time(), token)

    async def _run_alone(
        self, queue: _Queue, runner: Runner, feeds: Mapping[str, Array], rows: int, deadline: float | None,
        enqueued: float, token: object,
    ) -> list[Array]:
        """Run a task that holds `token` as a batch of one; its outputs in the queue's fetch order."""
        call = _Call(runner, deadline, 1)
        call.pending = 0  # never queued
        batch = _Batch([_Piece(call, 0, feeds, rows)], rows, enqueued)
        batch.queued.append(anyio.current_time() - enqueued)
        queue.running += 1
        await self._run(queue, batch, token)  # shielded: TF is not interrupted, RunOptions' timeout ends it
        if call.error is not None:
            raise call.error
        record = current_request.get()
        if record is not None:
            record.batch_size = call.batch_size
        outputs = call.outputs[0]
        assert outputs is not None
        return outputs

    async def _wait_token(self, queue: _Queue, token: object, deadline: float | None) -> None:
        queue.waiting += 1
        try:
            with anyio.CancelScope(deadline=math.inf if deadline is None else deadline) as waiting:
                await self._tokens.acquire_on_behalf_of(token)
        except anyio.get_cancelled_exc_class():
            self._totals["cancelled"] += 1
            raise
        finally:
            queue.waiting -= 1
        if waiting.cancelled_caught:
            self._totals["expired"] += 1
            raise ServingError(Code.DEADLINE_EXCEEDED, QUEUE_TIMEOUT)

    def statistics(self) -> BatcherStatistics:
        queues = tuple(
            QueueStatistics(
                q.model,
                q.version,
                q.lane.value,
                q.feeds,
                q.fetches,
                sum(len(b.pieces) for b in q.batches) + q.waiting,
                sum(1 for b in q.batches if b.pieces),
                q.running,
                q.batches_run,
                q.tasks_run,
                q.rows_run,
                q.padding_rows,
            )
            for per_servable in list(self._queues.values())
            for q in per_servable.values()
        )
        return BatcherStatistics(queues, **self._totals)

    # -- admission (TF's Queue::Schedule) ---------------------------------------------------------------------
    def policy_for(self, runner: Runner) -> BatchingPolicy:
        """The server's policy, or the version's own (`--enable_per_model_batching_parameters`, issue 10)."""
        own = getattr(runner, "batching_policy", None)
        return own if isinstance(own, BatchingPolicy) else self.policy

    def _lane(self, policy: BatchingPolicy, feeds: Mapping[str, Array]) -> tuple[Lane, int]:
        if not policy.enabled:
            first = next(iter(feeds.values()), None)
            return Lane.SINGLE, int(first.shape[0]) if first is not None and first.ndim else 1
        size = task_size(feeds)
        return (Lane.SERIAL, 1) if size is None else (Lane.BATCHED, size)

    def _queue(
        self, runner: Runner, lane: Lane, feeds: Mapping[str, Array], fetches: Sequence[str], policy: BatchingPolicy
    ) -> _Queue:
        names = tuple(sorted(feeds))
        dtypes = tuple(feeds[n].dtype.str for n in names) if lane is Lane.BATCHED else ()
        key = (lane, names, tuple(sorted(set(fetches))), dtypes)
        per_servable = self._queues.setdefault(runner, {})
        queue = per_servable.get(key)
        if queue is None:
            queue = per_servable[key] = _Queue(runner, lane, key[1], key[2], policy)
        return queue

    def _admit(self, queue: _Queue, size: int) -> list[int]:
        """The sizes of the pieces the task enters the queue as; raises when it cannot."""
        policy = queue.policy
        if not policy.enabled:
            return [size]
        enqueued = max(len(queue.batches), 1)
        if queue.lane is Lane.SERIAL:
            if queue.batches and queue.batches[-1].pieces and enqueued >= policy.max_enqueued_batches:
                self._totals["rejected"] += 1
                raise ServingError(Code.UNAVAILABLE, QUEUE_FULL)
            return [size]
        if size > policy.max_batch_size:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size {policy.max_batch_size}"
            )
        limit = policy.execution_batch_size
        open_size = queue.batches[-1].size if queue.batches else 0
        if policy.enable_large_batch_splitting:
            capacity = (policy.max_enqueued_batches - enqueued) * limit + (limit - open_size)
            if size > capacity:
                self._totals["rejected"] += 1
                raise ServingError(
                    Code.UNAVAILABLE,
                    f"{QUEUE_FULL}; task size is {size} but scheduling capacity is only {capacity} "
                    f"(num_enqueued_batches={enqueued}, max_enqueued_batches={policy.max_enqueued_batches}, "
                    f"open_batch_size={open_size}, max_execution_batch_size={limit})",
                )
            return split_sizes(size, limit - open_size, limit)
        if open_size + size > limit and enqueued >= policy.max_enqueued_batches:
            self._totals["rejected"] += 1
            raise ServingError(Code.UNAVAILABLE, QUEUE_FULL)
        return [size]

    def _place(self, queue: _Queue, call: _Call, feeds: Mapping[str, Array], sizes: list[int]) -> None:
        limit = queue.policy.execution_batch_size
        offset = 0
        now = anyio.current_time()
        for index, n in enumerate(sizes):
            part = feeds if len(sizes) == 1 else {k: v[offset : offset + n] for k, v in feeds.items()}
            offset += n
            tail = queue.batches[-1] if queue.batches else None
            if tail is None or (tail.pieces and (queue.lane is not Lane.BATCHED or tail.size + n > limit)):
                tail = _Batch([])
                queue.batches.append(tail)
            if not tail.pieces:
                tail.opened_at = now
            tail.pieces.append(_Piece(call, index, part, n))
            tail.size += n
        if queue.leader is not None:
            queue.leader.wake.set()

    def _abandon(self, queue: _Queue, call: _Call) -> int:
        """Take the call's queued pieces out (it is done, failed, cancelled or expired); pass on the lead."""
        removed = 0
        if call.pending:
            for batch in queue.batches:
                kept = [p for p in batch.pieces if p.call is not call]
                removed += len(batch.pieces) - len(kept)
                batch.size -= sum(p.size for p in batch.pieces if p.call is call)
                batch.pieces = kept
            queue.batches = deque(b for b in queue.batches if b.pieces)
            call.pending = 0
        self._pass_lead(queue, call)
        return removed

    def _fail(self, queue: _Queue, call: _Call, error: ServingError) -> None:
        if call.error is None and call.remaining:
            call.error = error
            self._abandon(queue, call)
            call.wake.set()

    # -- leading a queue (TF's batch threads) -----------------------------------------------------------------
    async def _serve(self, queue: _Queue, call: _Call) -> None:
        while not call.done:
            if queue.leader is None and call.pending:
                queue.leader = call
            if queue.leader is call:
                await self._lead(queue, call)
            else:
                call.wake = anyio.Event()
                await call.wake.wait()

    def _pass_lead(self, queue: _Queue, call: _Call) -> None:
        if queue.leader is not call:
            return
        queue.leader = None
        for batch in queue.batches:
            for piece in batch.pieces:
                if piece.call is not call:
                    queue.leader = piece.call
                    piece.call.wake.set()
                    return

    async def _lead(self, queue: _Queue, call: _Call) -> None:
        async with anyio.create_task_group() as tg:
            try:
                while call.pending:
                    taken = await self._next_batch(queue, call)
                    if taken is not None:
                        tg.start_soon(self._run, queue, *taken)
            finally:
                self._pass_lead(queue, call)

    def _wait_time(self, queue: _Queue, now: float) -> float:
        """0 when the head batch may close now, else how long until it may (inf: until something changes)."""
        head = queue.head()
        if head is None or (queue.lane is Lane.SERIAL and queue.running):
            return math.inf
        if queue.lane is not Lane.BATCHED or len(queue.batches) > 1:
            return 0.0
        if head.size >= queue.policy.execution_batch_size:
            return 0.0
        return max(0.0, head.opened_at + queue.policy.batch_timeout_micros / 1e6 - now)

    async def _next_batch(self, queue: _Queue, call: _Call) -> tuple[_Batch, object] | None:
        while (wait := self._wait_time(queue, anyio.current_time())) > 0:
            if not call.pending:
                return None
            call.wake = anyio.Event()
            with anyio.move_on_after(wait):
                await call.wake.wait()
        token = object()
        await self._tokens.acquire_on_behalf_of(token)
        now = anyio.current_time()
        head = queue.head()
        batch = None
        if head is not None:
            queue.batches.popleft()
            batch = _Batch([], 0, head.opened_at)
            for piece in head.pieces:
                piece.call.pending -= 1
                if piece.call.deadline is not None and now >= piece.call.deadline:
                    self._totals["expired"] += 1
                    self._fail(queue, piece.call, ServingError(Code.DEADLINE_EXCEEDED, QUEUE_TIMEOUT))
                elif piece.call.error is None:
                    batch.pieces.append(piece)
                    batch.size += piece.size
                    batch.queued.append(now - piece.call.enqueued_at)
        if not batch or not batch.pieces:
            self._tokens.release_on_behalf_of(token)
            return None
        queue.running += 1  # now, not when the child task starts: a serial queue's next leader must wait
        return batch, token

    async def _run(self, queue: _Queue, batch: _Batch, token: object) -> None:
        results: list[list[Array]] | None = None
        error: ServingError | None = None
        try:
            with anyio.CancelScope(shield=True):
                try:
                    results = await anyio.to_thread.run_sync(
                        self._execute, queue, batch, limiter=self._threads
                    )
                except ServingError as exc:
                    error = exc
                except Exception as exc:  # a bug: logged once, every task of the batch answered INTERNAL
                    log.exception("batch_crashed", model=queue.model, version=queue.version)
                    error = ServingError(Code.INTERNAL, f"Batch failed: {type(exc).__name__}: {exc}")
        finally:
            self._tokens.release_on_behalf_of(token)
            queue.running -= 1
        self._deliver(queue, batch, results, error)

    def _deliver(
        self, queue: _Queue, batch: _Batch, results: list[list[Array]] | None, error: ServingError | None
    ) -> None:
        padding = self._padding(queue, batch)
        queue.batches_run += 1
        queue.tasks_run += len(batch.pieces)
        queue.rows_run += batch.size
        queue.padding_rows += padding
        for name, n in (
            ("batches_run", 1),
            ("tasks_run", len(batch.pieces)),
            ("rows_run", batch.size),
            ("padding_rows", padding),
        ):
            self._totals[name] += n
        for i, piece in enumerate(batch.pieces):
            call = piece.call
            if results is None:
                self._fail(queue, call, error or ServingError(Code.INTERNAL, "Batch failed"))
            elif call.error is None:
                call.outputs[piece.index] = results[i]
                call.batch_size = batch.size
                call.remaining -= 1
                if call.done:
                    call.wake.set()
        if queue.leader is not None:
            queue.leader.wake.set()
        if self._observe is not None:
            self._observe(queue.model, queue.version, batch.size, batch.queued)

    def _padding(self, queue: _Queue, batch: _Batch) -> int:
        if queue.lane is not Lane.BATCHED or batch.size == 0:
            return 0
        return padded_size(queue.policy.allowed_batch_sizes, batch.size) - batch.size

    def _execute(self, queue: _Queue, batch: _Batch) -> list[list[Array]]:
        """One TensorFlow run for the batch (inference thread)."""
        runner = batch.pieces[0].call.runner
        timeout = _run_timeout_ms(batch)
        if queue.lane is not Lane.BATCHED:
            piece = batch.pieces[0]
            outputs = _run(runner, piece.feeds, queue.fetches, timeout)
            return [outputs]
        padding = self._padding(queue, batch)
        feeds = merge_inputs(
            queue.feeds, [p.feeds for p in batch.pieces], padding, queue.policy.pad_variable_length_inputs
        )
        outputs = _run(runner, feeds, queue.fetches, timeout)
        return split_outputs(outputs, [p.size for p in batch.pieces], padding)


def _run_timeout_ms(batch: _Batch) -> int | None:
    """The time the run may take, as TF Serving hands `Session::Run` the request's remaining deadline in
    `RunOptions.timeout_in_ms`: for a batch the largest remaining time of its tasks (each task still expires
    on its own), None when one of them has no deadline. Called in the inference thread."""
    deadlines = [p.call.deadline for p in batch.pieces]
    if not deadlines or any(d is None for d in deadlines):
        return None
    remaining = max(d for d in deadlines if d is not None) - time.monotonic()  # anyio's clock on asyncio
    return max(math.ceil(remaining * 1000), 1)


def _run(runner: Runner, feeds: Mapping[str, Array], fetches: Sequence[str], timeout_ms: int | None) -> list[Array]:
    if timeout_ms is None:
        return runner.run(feeds, fetches)
    return runner.run(feeds, fetches, timeout_ms=timeout_ms)
