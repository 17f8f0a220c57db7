"""One SavedModel signature as a Python callable, for the peer servers of bench/peers_bench.py.

Runs inside the peers' own venvs (KServe, MLServer, PyTriton): TensorFlow and numpy only. The model is loaded
into its own Graph and Session (TF1 loader, as TF Serving and aspired load it) and `serving_default` is called
through one `Session.make_callable` per model: no Python-side work per request beyond the feed list, which is
the cheapest way a Python server can call TensorFlow. Session.run releases the GIL.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf  # after the log level is set


class Signature:
    def __init__(self, path: str, key: str = "serving_default") -> None:
        tf.get_logger().setLevel("ERROR")
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], path)
        signature = meta.signature_def[key]
        self.input_names = sorted(signature.inputs)
        self.output_names = sorted(signature.outputs)
        # per input/output: (dtype, shape with -1 for unknown dims) from the signature
        self.inputs = {k: _spec(signature.inputs[k]) for k in self.input_names}
        self.outputs = {k: _spec(signature.outputs[k]) for k in self.output_names}
        self._call = self.session.make_callable(
            [signature.outputs[k].name for k in self.output_names],
            [signature.inputs[k].name for k in self.input_names],
        )

    def __call__(self, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        values = self._call(*(feeds[k] for k in self.input_names))
        return dict(zip(self.output_names, values, strict=True))


def _spec(info: Any) -> tuple[np.dtype[Any], tuple[int, ...]]:
    dtype = np.dtype(tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
    shape = tuple(-1 if d.size < 0 else d.size for d in info.tensor_shape.dim)
    return dtype, shape
