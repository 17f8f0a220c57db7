"""Custom ops: the Python modules and op libraries loaded before any model, and what a load error that names
an unregistered op should tell the user.

TF Serving links every op into its C++ binary: a SavedModel that uses tensorflow-text tokenizers, sentencepiece
or TF Decision Forests fails with `Op type not registered 'X'` until the binary is rebuilt (tfs#1490). This
server runs on the TensorFlow pip package, where the same ops are one import away: `--custom_op_modules`
imports Python modules whose import registers ops (`tensorflow_text`), `--custom_op_libraries` loads op
libraries with `tf.load_op_library`, both before the first model loads. A version that still fails with
`Op type not registered 'X'` keeps TensorFlow's status and text, followed by which flag and which package
provide X (a table built from the packages' own op registrations), or how to find them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from svc.errors import Code, ServingError


@dataclass(frozen=True, slots=True)
class OpPackage:
    """A pip distribution whose Python module registers TensorFlow ops when imported."""

    distribution: str
    module: str
    install: str  # what to run to get a version matching this server's TensorFlow


TENSORFLOW_TEXT: Final = OpPackage("tensorflow-text", "tensorflow_text", "pip install 'aspired[text]'")
TF_SENTENCEPIECE: Final = OpPackage(
    "tf-sentencepiece", "tf_sentencepiece",
    "unmaintained, last built for TensorFlow 2.2: re-export the model with tensorflow_text.SentencepieceTokenizer",
)
DECISION_FORESTS: Final = OpPackage(
    "tensorflow-decision-forests", "tensorflow_decision_forests",
    "pip install tensorflow-decision-forests (the release built for this TensorFlow)",
)
TENSORFLOW_IO: Final = OpPackage(
    "tensorflow-io", "tensorflow_io", "pip install tensorflow-io (the release built for this TensorFlow)"
)
TENSORFLOW_ADDONS: Final = OpPackage(
    "tensorflow-addons", "tensorflow_addons", "pip install tensorflow-addons (end of life: TensorFlow <= 2.15)"
)
SCANN: Final = OpPackage("scann", "scann", "pip install scann (the release built for this TensorFlow)")
RECOMMENDERS_ADDONS: Final = OpPackage(
    "tensorflow-recommenders-addons", "tensorflow_recommenders_addons",
    "pip install tensorflow-recommenders-addons (the release built for this TensorFlow)",
)

# Ops registered without a package prefix, as the packages' REGISTER_OP calls name them. tensorflow-text's are
# the ops `import tensorflow_text` (2.21) adds to the registry; tf-sentencepiece's are those of its
# `sentencepiece_processor_ops.cc`.
_OPS: Final[dict[str, OpPackage]] = {
    **dict.fromkeys(
        (
            "CaseFoldUTF8", "ConstrainedSequence", "FastBertNormalize", "FastWordpieceTokenizeWithOffsets",
            "FindSourceOffsets", "MaxSpanningTree", "NormalizeUTF8", "NormalizeUTF8WithOffsetsMap",
            "PhraseTokenize", "RegexSplitWithOffsets", "RougeL", "SentenceFragments", "SentenceFragmentsV2",
            "SentencepieceDetokenizeOp", "SentencepieceIdToStringOp", "SentencepieceOp",
            "SentencepieceStringToIdOp", "SentencepieceTokenizeOp", "SentencepieceTokenizeWithOffsetsOp",
            "SentencepieceVocabSizeOp", "SplitMergeTokenizeWithOffsets", "TokenizerFromLogits",
            "UnicodeScriptTokenizeWithOffsets", "WhitespaceTokenizeWithOffsets", "WordpieceTokenizeWithOffsets",
        ),
        TENSORFLOW_TEXT,
    ),
    **dict.fromkeys(
        (
            "SentencepieceGetPieceSize", "SentencepiecePieceToId", "SentencepieceIdToPiece",
            "SentencepieceGetPieceType", "SentencepieceEncodeDense", "SentencepieceEncodeSparse",
            "SentencepieceDecode",
        ),
        TF_SENTENCEPIECE,
    ),
}
# Packages that name their ops with a prefix (`REGISTER_OP("IO>...")`); the first matching prefix wins.
_PREFIXES: Final[tuple[tuple[str, OpPackage], ...]] = (
    ("TFText>", TENSORFLOW_TEXT),
    ("SimpleML", DECISION_FORESTS),  # SimpleMLInferenceOp, SimpleMLLoadModelFromPathWithHandle, ...
    ("IO>", TENSORFLOW_IO),
    ("Addons>Scann", SCANN),
    ("Addons>", TENSORFLOW_ADDONS),
    ("TFRA>", RECOMMENDERS_ADDONS),
)
_NOT_REGISTERED: Final = re.compile(r"Op type not registered '([^']+)'")


def op_package(op: str) -> OpPackage | None:
    """The package known to register `op`, or None."""
    if op in _OPS:
        return _OPS[op]
    for prefix, package in _PREFIXES:
        if op.startswith(prefix):
            return package
    return None


def unregistered_op(message: str) -> str | None:
    """The op name of TensorFlow's `Op type not registered 'X' ...` error text, or None."""
    match = _NOT_REGISTERED.search(message)
    return match[1] if match else None


def missing_op_hint(op: str) -> str:
    """What to do about a model needing `op`, which this process does not register."""
    package = op_package(op)
    if package is None:
        return (
            f"aspired: op '{op}' is neither TensorFlow's nor one of a package aspired knows. Start the server "
            "with --custom_op_modules=<the Python module that registers it, e.g. the one imported when the "
            "model was exported> or --custom_op_libraries=<the op library .so that registers it>; "
            f"`grep -rl --include='*.so' '{op}' <site-packages>` finds the library."
        )
    if package.module in sys.modules:
        try:
            installed = importlib.metadata.version(package.distribution)
        except importlib.metadata.PackageNotFoundError:
            installed = "unknown"
        return (
            f"aspired: op '{op}' comes from {package.distribution}, which is loaded (--custom_op_modules="
            f"{package.module}), but its installed version ({installed}) does not register it: install the "
            "version the model was exported with."
        )
    return (
        f"aspired: op '{op}' is registered by the Python package {package.distribution}: start the server "
        f"with --custom_op_modules={package.module} (install: {package.install})."
    )


def explain_load_error(message: str) -> str | None:
    """`message` followed by the hint when it is TensorFlow's unregistered-op error, else None."""
    op = unregistered_op(message)
    if op is None:
        return None
    return f"{message} {missing_op_hint(op)}"


def registered_ops() -> frozenset[str]:
    """Every op name in this process's op registry (TensorFlow's own and those loaded since)."""
    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session

    buffer = pywrap_tf_session.TF_GetAllOpList()
    try:
        ops = op_def_pb2.OpList.FromString(pywrap_tf_session.TF_GetBuffer(buffer))
    finally:
        pywrap_tf_session.TF_DeleteBuffer(buffer)
    return frozenset(op.name for op in ops.op)


def load_custom_ops(modules: Sequence[str], libraries: Sequence[str]) -> tuple[str, ...]:
    """Import `modules`, then load the op `libraries`, in order; the names of the ops they added to the
    registry. Blocking (an import can take seconds). The first failure raises ServingError: start-up ends."""
    import tensorflow as tf

    before = registered_ops()
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            raise ServingError(Code.NOT_FOUND, f"--custom_op_modules: cannot import {name}: {exc}") from exc
        except Exception as exc:  # the module's own import code failed (e.g. built for another TensorFlow)
            raise ServingError(
                Code.UNKNOWN, f"--custom_op_modules: cannot import {name}: {type(exc).__name__}: {exc}"
            ) from exc
    for path in libraries:
        try:
            tf.load_op_library(path)
        except tf.errors.OpError as exc:
            raise ServingError(
                Code(exc.error_code), f"--custom_op_libraries: cannot load {path}: {exc.message}"
            ) from exc
    return tuple(sorted(registered_ops() - before))
