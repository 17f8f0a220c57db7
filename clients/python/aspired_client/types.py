"""What the client's methods return besides arrays: model metadata and version status, as plain frozen
dataclasses built from either protocol's answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: the graph tensor `name` (`x:0`), its `dtype` (`DT_FLOAT`) and
    `shape` (-1 for an unknown dimension; None for an unknown rank)."""

    name: str
    dtype: str
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class Signature:
    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


@dataclass(frozen=True)
class ModelMetadata:
    """GetModelMetadata's answer: the resolved model `name` and `version`, and its signatures by key.
    `signature_def_map` is the `tensorflow.serving.SignatureDefMap` message itself (the client's copy)."""

    name: str
    version: int
    signatures: dict[str, Signature]
    signature_def_map: Any = field(repr=False, compare=False, default=None)


@dataclass(frozen=True)
class VersionStatus:
    """One entry of GetModelStatus: `state` is START, LOADING, AVAILABLE, UNLOADING or END; `error_code`
    the TF error code name (`OK` unless loading failed) and `error_message` its text."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""
