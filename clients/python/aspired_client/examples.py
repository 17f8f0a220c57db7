"""tf.Example from plain dicts of features, for Classify and Regress.

A feature value is one value or a flat sequence (list, tuple, 1-D numpy array) of one kind: floats make a
`float_list`, ints and bools an `int64_list`, bytes and str a `bytes_list` (str as UTF-8) — the rules of TF
Serving's REST API, so both protocols send the same examples.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aspired_client._pb.tensorflow.core.example import example_pb2

Features = Mapping[str, Any]


def _values(name: str, value: Any) -> tuple[str, list[Any]]:
    """(kind, values) of one feature; kind is `float`, `int64` or `bytes`."""
    if isinstance(value, np.ndarray):
        if value.ndim > 1:
            raise ValueError(f"feature {name!r}: a feature is a flat list, got shape {value.shape}")
        items: list[Any] = value.tolist()
    elif isinstance(value, str | bytes) or not isinstance(value, Sequence):
        items = [value.item() if isinstance(value, np.generic) else value]
    else:
        items = [item.item() if isinstance(item, np.generic) else item for item in value]
    if not items:
        raise ValueError(f"feature {name!r} is empty: its kind (float, int64, bytes) cannot be told")
    kinds = {_kind(name, item) for item in items}
    if len(kinds) != 1:
        raise ValueError(f"feature {name!r} mixes kinds {sorted(kinds)}")
    return kinds.pop(), items


def _kind(name: str, item: Any) -> str:
    if isinstance(item, bool | int):
        return "int64"
    if isinstance(item, float):
        return "float"
    if isinstance(item, bytes | str):
        return "bytes"
    raise ValueError(f"feature {name!r} has a value of type {type(item).__name__}")


def make_example(features: Features) -> Any:
    """A `tensorflow.Example` (the client's copy) from a dict of features."""
    example = example_pb2.Example()
    feature_map = example.features.feature
    for name, value in features.items():
        kind, items = _values(name, value)
        feature = feature_map[name]
        if kind == "float":
            feature.float_list.value.extend(items)
        elif kind == "int64":
            feature.int64_list.value.extend(int(item) for item in items)
        else:
            feature.bytes_list.value.extend(
                item.encode() if isinstance(item, str) else item for item in items
            )
    return example


def example_json(features: Features) -> dict[str, Any]:
    """The REST form of one example: floats always written with a fraction (a float feature), bools as
    ints (TF Serving reads JSON true as int64 1 anyway), bytes as `{"b64": ...}`."""
    document: dict[str, Any] = {}
    for name, value in features.items():
        kind, items = _values(name, value)
        if kind == "float":
            encoded: list[Any] = [float(item) for item in items]
        elif kind == "int64":
            encoded = [int(item) for item in items]
        else:
            encoded = [
                item if isinstance(item, str) else {"b64": base64.b64encode(item).decode()} for item in items
            ]
        document[name] = encoded
    return document
