"""One loaded SavedModel version: a TF1 Session over the model's graph, its SignatureDefs, and `run`.

The only module that imports TensorFlow. Mirrors TF Serving's `SavedModelBundle` (`servables/tensorflow/
saved_model_bundle_factory.cc`): every SavedModel, TF1 or TF2 export, is loaded into a fresh Graph and Session
with `tf.compat.v1.saved_model.loader.load`, which is what TF Serving does in C++; its MetaGraphDef's
signatures are exactly what GetModelMetadata answers. Loading and running block: callers run them in threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2

from svc.errors import Code, PermanentError, ServingError
from svc.servables.custom_ops import explain_load_error
from svc.types import Array

_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


class Servable:
    """A loaded version: its signatures and `run`. Requests hold it through the serving map's leases
    (`svc.lifecycle.serving_map.ServableHandle`); the loader pool closes it once none does."""

    def __init__(
        self, name: str, version: int, path: str, session: Any, meta_graph: meta_graph_pb2.MetaGraphDef,
        runs_inline: bool = False,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self._session = session
        self.meta_graph = meta_graph
        self.signatures: Mapping[str, meta_graph_pb2.SignatureDef] = meta_graph.signature_def
        self._callables: dict[tuple[tuple[str, ...], tuple[str, ...], int], Any] = {}
        self._callables_lock = threading.Lock()
        self._runs_inline = runs_inline  # the graph may run in the calling thread (`may_run_inline`)
        self._inline: dict[tuple[tuple[str, ...], tuple[str, ...]], _InlineCallable] = {}
        self.batching_policy: Any = None  # the version's own (batching_params.pbtxt), else the server's

    # -- blocking work (threads only) -----------------------------------------------------------------
    def run(
        self, feeds: Mapping[str, Array], fetches: Sequence[str], timeout_ms: int | None = None
    ) -> list[Array]:
        """One Session.run: feeds keyed by tensor name, fetches by tensor name. Raises ServingError.

        `timeout_ms` (the request's remaining deadline, as TF Serving passes `RunOptions.timeout_in_ms` to
        `Session::Run`) ends a slower run with DEADLINE_EXCEEDED; it is rounded up to one of 8 steps per
        doubling (at most 12.5% later), so a few callables serve every deadline.

        A graph that `may_run_inline` runs in the calling thread (TF's `RunOptions.inter_op_thread_pool =
        -1`) while its runs stay short: TF's hand-off to its inter-op pool and back cost ~40-70 us of CPU per
        run on this project's machine (issue 11), more than a small model's whole run. Such a run cannot be
        cut short by the timeout, which is why only graphs without loops or waits qualify."""
        import tensorflow as tf

        inline: _InlineCallable | None = None
        if self._runs_inline:
            inline = self._inline.get((tuple(feeds), tuple(fetches)))
            if inline is None:
                inline = self._inline_callable(feeds, fetches)
            if inline.mean > _INLINE_MAX_SECONDS:
                inline = None
        fn = inline.fn if inline is not None else self._pooled_callable(feeds, fetches, timeout_ms)
        started = time.perf_counter()
        try:
            outputs = fn(*feeds.values())
        except tf.errors.OpError as exc:
            raise ServingError(Code(exc.error_code), exc.message) from exc
        except (ValueError, TypeError) as exc:
            raise ServingError(Code.INVALID_ARGUMENT, str(exc)) from exc
        finally:
            elapsed = time.perf_counter() - started
            if inline is not None:
                inline.observe(elapsed)
            if _run_observer is not None:
                _run_observer(elapsed)
        return [np.asarray(o) for o in outputs]

    def _inline_callable(self, feeds: Mapping[str, Array], fetches: Sequence[str]) -> _InlineCallable:
        with self._callables_lock:
            inline = _InlineCallable(self._make_callable(feeds, fetches, inline=True))
            self._inline[(tuple(feeds), tuple(fetches))] = inline
            return inline

    def _pooled_callable(self, feeds: Mapping[str, Array], fetches: Sequence[str], timeout_ms: int | None) -> Any:
        bucket = _timeout_bucket(timeout_ms) if timeout_ms is not None else 0
        key = (tuple(feeds), tuple(fetches), bucket)
        fn = self._callables.get(key)
        if fn is None:
            with self._callables_lock:
                if bucket and len(self._callables) > _MAX_CALLABLES:  # odd deadlines must not grow it for ever
                    self._callables = {k: v for k, v in self._callables.items() if not k[2]}
                fn = self._callables[key] = self._make_callable(feeds, fetches, timeout_ms=bucket)
        return fn

    def _make_callable(
        self, feeds: Mapping[str, Array], fetches: Sequence[str], *, timeout_ms: int = 0, inline: bool = False
    ) -> Any:
        """A callable made from CallableOptions: it feeds straight into the C++ session, as TF Serving does (no
        Python-side shape check: TF Serving does not check declared shapes either; a dtype mismatch is the
        runtime's own INVALID_ARGUMENT)."""
        import tensorflow as tf
        from tensorflow.core.protobuf import config_pb2

        options = config_pb2.CallableOptions(feed=list(feeds), fetch=list(fetches))
        if timeout_ms:
            options.run_options.timeout_in_ms = timeout_ms
        if inline:
            options.run_options.inter_op_thread_pool = -1  # TF: "use the caller thread"
        try:
            return self._session._make_callable_from_options(options)
        except tf.errors.OpError as exc:
            raise ServingError(Code(exc.error_code), exc.message) from exc

    def close(self) -> None:
        self._callables.clear()
        self._inline.clear()
        self._session.close()


_MAX_CALLABLES = 256
_INLINE_MAX_SECONDS = 0.002  # a callable whose runs take longer on average goes to TF's inter-op pool for good
_INLINE_WARMUP_RUNS = 2  # first runs (allocations, lazy initialisation) are not counted


class _InlineCallable:
    """A callable that runs in the calling thread, and the running mean of its run time."""

    __slots__ = ("fn", "mean", "runs")

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.mean = 0.0
        self.runs = 0

    def observe(self, seconds: float) -> None:
        self.runs += 1
        if self.runs > _INLINE_WARMUP_RUNS:
            self.mean += (seconds - self.mean) * 0.25  # races between threads only blur the mean


# Ops after which a run may wait on another op or on the outside (queues, send/receive, barriers, input
# pipelines) or run for as long as its input asks (loops): a graph with any of them keeps TF's inter-op pool,
# whose runs the request's deadline can end (`RunOptions.timeout_in_ms` is not applied to a run in the
# calling thread).
_LOOP_OPS = frozenset({"While", "StatelessWhile", "_While", "Enter", "RefEnter", "Exit", "RefExit", "NextIteration",
                       "RefNextIteration", "LoopCond"})
_WAITING_OP_PARTS = ("Queue", "Iterator", "Dataset", "Recv", "Send", "Barrier", "Stage", "Accumulator", "Sleep",
                     "Collective", "Py", "Notification", "Semaphore", "Reader")


def may_run_inline(graph_def: Any) -> bool:
    """Whether every op of the graph and its function library finishes without waiting or looping."""
    ops = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        ops.update(node.op for node in function.node_def)
    return not any(op in _LOOP_OPS or any(part in op for part in _WAITING_OP_PARTS) for op in ops)
_run_observer: Callable[[float], None] | None = None


def observe_runs(callback: Callable[[float], None] | None) -> None:
    """Be told the duration of every session run (TF's `/tensorflow/core/graph_runs` and
    `graph_run_time_usecs`, which TF's own registry counts in its DirectSession)."""
    global _run_observer
    _run_observer = callback


def _timeout_bucket(timeout_ms: int) -> int:
    """`timeout_ms` rounded up to 3 significant bits (1..8 exactly, then 8 steps per doubling)."""
    t = max(int(timeout_ms), 1)
    shift = max(t.bit_length() - 4, 0)
    return -(-t >> shift) << shift


def check_saved_model_dir(path: str) -> None:
    """TF Serving's checks before a load, with its texts."""
    p = Path(path)
    if (p / "export.meta").exists() and not any((p / f).exists() for f in _SAVED_MODEL_FILES):
        raise ServingError(Code.UNIMPLEMENTED, "Session Bundle is deprecated and removed.")
    if not any((p / f).exists() for f in _SAVED_MODEL_FILES):
        raise ServingError(
            Code.NOT_FOUND,
            "Specified file path does not appear to contain a SavedModel bundle (should have a file called "
            f"`saved_model.pb`)\nSpecified file path: {path}",
        )


def load(name: str, version: int, path: str, tags: Sequence[str], session_config: Any = None) -> Servable:
    """Load one SavedModel version into its own Graph and Session. Blocking; raises ServingError."""
    check_saved_model_dir(path)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # the TF1 loader's deprecation notice is not the user's concern

    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=session_config)
    # A SavedModel is input, not code: whatever the loader raises closes the session and propagates; TF's own
    # statuses keep their code and text, anything else becomes LoadFailed at the loader pool's boundary
    # (issue 10).
    try:
        with graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(session, list(tags), path)
        slim = meta_graph_pb2.MetaGraphDef()
        slim.signature_def.MergeFrom(meta_graph.signature_def)  # remove_unused_fields_from_bundle_metagraph
        runs_inline = may_run_inline(graph.as_graph_def())
        graph.finalize()
    except tf.errors.OpError as exc:
        session.close()
        raise _load_error(Code(exc.error_code), exc.message) from exc
    except BaseException:
        session.close()
        raise
    return Servable(name, version, path, session, slim, runs_inline)


def _load_error(code: Code, message: str) -> ServingError:
    """TensorFlow's load error; one naming an unregistered op gets the flag and package that provide it and
    is not retried (the op registry does not change while the server runs)."""
    explained = explain_load_error(message)
    if explained is None:
        return ServingError(code, message)
    return PermanentError(code, explained)


def session_config(intra: int, inter: int, parallelism: int, config_text: str = "", gpu_fraction: float = 0.0) -> Any:
    """The sessions' ConfigProto: `--tensorflow_session_config_file`'s text (if any), then the
    tensorflow_*_parallelism flags (0 = TF chooses) and `--per_process_gpu_memory_fraction` when set."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import config_pb2

    config = config_pb2.ConfigProto()
    if config_text:
        try:
            text_format.Parse(config_text, config)
        except text_format.ParseError as exc:
            raise ServingError(
                Code.INVALID_ARGUMENT, f"Error parsing text-format tensorflow.ConfigProto: {exc}"
            ) from exc
    if gpu_fraction > 0:
        config.gpu_options.per_process_gpu_memory_fraction = gpu_fraction
    if parallelism > 0:
        config.intra_op_parallelism_threads = parallelism
        config.inter_op_parallelism_threads = parallelism
    if intra > 0:
        config.intra_op_parallelism_threads = intra
    if inter > 0:
        config.inter_op_parallelism_threads = inter
    return config
