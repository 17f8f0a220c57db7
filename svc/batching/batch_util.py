"""The pure half of batching: TF Serving's BatchingParameters as a validated policy, and the tensor work of
a batch (`batching/batching_util.cc`, `batching/batching_session.cc`): a task's batch size, splitting a large
task, merging inputs with padding (`allowed_batch_sizes`, `pad_variable_length_inputs`), slicing outputs back.
No I/O and no event loop; `svc/batching/scheduler.py` is the actor that uses these, and runs them in inference threads.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from svc.errors import ServingError, failed_precondition, invalid_argument
from svc.types import Array

# --- policy ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchingPolicy:
    """BatchingParameters as the batcher uses them. `enabled=False` is the path without `--enable_batching`:
    every task a batch of one, no size or queue limits. Invalid values raise TF Serving's INVALID_ARGUMENT."""

    num_batch_threads: int
    enabled: bool = False
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 1000
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self) -> None:
        if self.num_batch_threads < 1:
            raise invalid_argument(f"num_batch_threads must be positive; was {self.num_batch_threads}")
        if not self.enabled:
            return
        sizes = self.allowed_batch_sizes
        if any(b <= a for a, b in itertools.pairwise(sizes)):
            raise invalid_argument("allowed_batch_sizes entries must be monotonically increasing")
        if sizes and sizes[-1] != self.max_batch_size:
            raise invalid_argument(
                f"Last entry in allowed_batch_sizes must match max_batch_size; last entry was {sizes[-1]}; "
                f"expected {self.max_batch_size}"
            )
        if self.max_batch_size <= 0:
            raise invalid_argument(f"input_batch_size_limit must be positive; was {self.max_batch_size}")
        if self.batch_timeout_micros < 0:
            raise invalid_argument(
                f"batch_timeout_micros must be non-negative; was {self.batch_timeout_micros}"
            )
        if self.max_enqueued_batches <= 0:
            raise invalid_argument(f"max_enqueued_batches must be positive; was {self.max_enqueued_batches}")
        if self.enable_large_batch_splitting and self.max_batch_size < self.max_execution_batch_size:
            raise invalid_argument(
                "When enable_large_batch_splitting is true, input_batch_size_limit must be greater than or "
                "equal to max_execution_batch_size."
            )

    @property
    def execution_batch_size(self) -> int:
        """The largest batch run: `max_execution_batch_size` when splitting, else `max_batch_size`."""
        return self.max_execution_batch_size if self.enable_large_batch_splitting else self.max_batch_size


def batching_policy(params: Any | None, num_threads: int) -> BatchingPolicy:
    """The policy from `svc.options.batching_parameters(options)` (a BatchingParameters message, or None
    without `--enable_batching`, when `num_threads` sizes the inference pool)."""
    if params is None:
        return BatchingPolicy(num_batch_threads=num_threads)

    def value(name: str, default: Any) -> Any:
        return getattr(params, name).value if params.HasField(name) else default

    splitting = bool(value("enable_large_batch_splitting", False))
    max_batch_size = int(value("max_batch_size", 1000))
    enqueued = int(value("max_enqueued_batches", 10))
    return BatchingPolicy(
        num_batch_threads=int(value("num_batch_threads", num_threads)),
        enabled=True,
        max_batch_size=max_batch_size,
        batch_timeout_micros=int(value("batch_timeout_micros", 0)),
        # TF rewrites 0 to 1 without splitting (SharedBatchScheduler::AddQueue).
        max_enqueued_batches=1 if enqueued == 0 and not splitting else enqueued,
        enable_large_batch_splitting=splitting,
        max_execution_batch_size=int(value("max_execution_batch_size", max_batch_size)),
        allowed_batch_sizes=tuple(int(s) for s in params.allowed_batch_sizes),
        pad_variable_length_inputs=bool(params.pad_variable_length_inputs),
    )


# --- merging and splitting tensors (pure) ---------------------------------------------------------------------


def task_size(feeds: Mapping[str, Array]) -> int | None:
    """`ComputeTensorBatchSize`: the shared 0th dimension; None when the task has no batch dimension."""
    ranks = [a.ndim for a in feeds.values()]
    if not ranks or not any(ranks):
        return None
    if not all(ranks):
        raise invalid_argument("Batching Run() input tensors must have at least one dimension")
    sizes = {a.shape[0] for a in feeds.values()}
    if len(sizes) != 1:
        raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    return int(sizes.pop())


def split_sizes(size: int, room: int, limit: int) -> list[int]:
    """A task of `size` rows split to fill the open batch's `room`, then batches of at most `limit`."""
    if size <= room:
        return [size]
    sizes = [room] if room > 0 else []
    size -= max(room, 0)
    while size > 0:
        sizes.append(min(size, limit))
        size -= sizes[-1]
    return sizes


def padded_size(allowed: Sequence[int], size: int) -> int:
    """`RoundToLowestAllowedBatchSize`."""
    return next((s for s in allowed if s >= size), size)


def _shape_error(name: str) -> ServingError:
    return failed_precondition(
        f"Tensors with name '{name}' from different tasks have different shapes and padding is turned off. "
        "Set pad_variable_length_inputs to true, or ensure that all tensors with the same name have equal "
        "dimensions starting with the first dim."
    )


def _pad_to(name: str, parts: list[Array]) -> list[Array]:
    """`pad_variable_length_inputs`: pad every non-batch dim at its end to the batch's maximum, with the
    tensor's own first element."""
    rank = parts[0].ndim
    if any(p.ndim != rank for p in parts):
        raise _shape_error(name)
    top = [max(p.shape[d] for p in parts) for d in range(rank)]
    out = []
    for p in parts:
        shape = (p.shape[0], *top[1:])
        if shape == p.shape:
            out.append(p)
            continue
        if p.size == 0:
            raise invalid_argument("Got empty tensor in batch of non-empty tensors.")
        if rank > 6:
            raise invalid_argument("Only tensors with rank from 1 to 6 can be padded.")
        padded = np.full(shape, p.flat[0], dtype=p.dtype)
        padded[tuple(slice(0, d) for d in p.shape)] = p
        out.append(padded)
    return out


def merge_inputs(
    names: Sequence[str], tasks: Sequence[Mapping[str, Array]], padding: int, pad_variable_length: bool
) -> dict[str, Array]:
    """`MergeInputTensors`: each input concatenated along dim 0, plus `padding` copies of the first row of
    the last task that has rows."""
    merged: dict[str, Array] = {}
    for name in names:
        parts = [t[name] for t in tasks]
        if pad_variable_length:
            parts = _pad_to(name, parts)
        elif any(p.shape[1:] != parts[0].shape[1:] or p.ndim != parts[0].ndim for p in parts):
            raise _shape_error(name)
        if padding:
            source = next(p for p in reversed(parts) if len(p))
            parts.append(np.repeat(source[:1], padding, axis=0))
        merged[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return merged


def split_outputs(outputs: Sequence[Array], sizes: Sequence[int], padding: int) -> list[list[Array]]:
    """`SplitOutputTensors`: every output sliced along dim 0 per task; padding rows dropped."""
    for out in outputs:
        if out.ndim == 0:
            raise failed_precondition("Batched output tensor has 0 dimensions")
        if out.shape[0] != sum(sizes) + padding:
            raise failed_precondition(
                "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension sizes of "
                "the input tensors"
            )
    result, offset = [], 0
    for n in sizes:
        result.append([out[offset : offset + n] for out in outputs])
        offset += n
    return result
