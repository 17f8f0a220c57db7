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
        self, name: str, version: int, path: str, session: Any, meta_graph: meta_graph_pb2.MetaGraphDef
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self._session = session
        self.meta_graph = meta_graph
        self.signatures: Mapping[str, meta_graph_pb2.SignatureDef] = meta_graph.signature_def
        self._callables: dict[tuple[tuple[str, ...], tuple[str, ...], int], Any] = {}
        self._callables_lock = threading.Lock()
        self.batching_policy: Any = None  # the version's own (batching_params.pbtxt), else the server's

    # -- blocking work (threads only) -----------------------------------------------------------------
    def run(
        self, feeds: Mapping[str, Array], fetches: Sequence[str], timeout_ms: int | None = None
    ) -> list[Array]:
        """One Session.run: feeds keyed by tensor name, fetches by tensor name. Raises ServingError.

        `timeout_ms` (the request's remaining deadline, as TF Serving passes `RunOptions.timeout_in_ms` to
        `Session::Run`) ends a slower run with DEADLINE_EXCEEDED; it is rounded up to one of 8 steps per
        doubling (at most 12.5% later), so a few callables serve every deadline."""
        import tensorflow as tf
        from tensorflow.core.protobuf import config_pb2

        bucket = _timeout_bucket(timeout_ms) if timeout_ms is not None else 0
        key = (tuple(feeds), tuple(fetches), bucket)
        fn = self._callables.get(key)
        if fn is None:
            with self._callables_lock:
                # A callable made from CallableOptions feeds straight into the C++ session, as TF Serving
                # does: no Python-side shape check (TF Serving does not check declared shapes either), and
                # a dtype mismatch is the runtime's own INVALID_ARGUMENT.
                options = config_pb2.CallableOptions(feed=list(feeds), fetch=list(fetches))
                if bucket:
                    options.run_options.timeout_in_ms = bucket
                    if len(self._callables) > _MAX_CALLABLES:  # odd deadlines must not grow it for ever
                        self._callables = {k: v for k, v in self._callables.items() if not k[2]}
                try:
                    fn = self._session._make_callable_from_options(options)
                except tf.errors.OpError as exc:
                    raise ServingError(Code(exc.error_code), exc.message) from exc
                self._callables[key] = fn
        started = time.perf_counter()
        try:
            outputs = fn(*feeds.values())
        except tf.errors.OpError as exc:
            raise ServingError(Code(exc.error_code), exc.message) from exc
        except (ValueError, TypeError) as exc:
            raise ServingError(Code.INVALID_ARGUMENT, str(exc)) from exc
        finally:
            if _run_observer is not None:
                _run_observer(time.perf_counter() - started)
        return [np.asarray(o) for o in outputs]

    def close(self) -> None:
        self._callables.clear()
        self._session.close()


_MAX_CALLABLES = 256
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
        graph.finalize()
    except tf.errors.OpError as exc:
        session.close()
        raise _load_error(Code(exc.error_code), exc.message) from exc
    except BaseException:
        session.close()
        raise
    return Servable(name, version, path, session, slim)


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
