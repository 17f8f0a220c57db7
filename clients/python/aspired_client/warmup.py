"""SavedModel warmup files without TensorFlow: `<version>/assets.extra/tf_serving_warmup_requests`, a
TFRecord of `tensorflow.serving.PredictionLog`s that TF Serving (and aspired) replays before a version
becomes AVAILABLE (`g3doc/saved_model_warmup.md`; at most 1000 records).

Signatures are read from the version's own `saved_model.pb` (the MetaGraphDef tagged `serve`, the one the
server loads), so JSON inputs get the dtypes the model declares.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aspired_client import _ops, tfrecord
from aspired_client.examples import Features
from aspired_client.types import Signature

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving refuses a file with more
SERVE_TAGS = frozenset({"serve"})


def saved_model_signatures(version_dir: Path, tags: frozenset[str] = SERVE_TAGS) -> dict[str, Signature]:
    """The signatures of the MetaGraphDef with exactly `tags` in `version_dir/saved_model.pb`."""
    from google.protobuf import text_format

    from aspired_client._pb.tensorflow.core.protobuf import saved_model_pb2
    from aspired_client._pb.tensorflow_serving.apis import get_model_metadata_pb2

    binary, text = version_dir / "saved_model.pb", version_dir / "saved_model.pbtxt"
    if binary.is_file():
        saved_model = saved_model_pb2.SavedModel.FromString(binary.read_bytes())
    elif text.is_file():
        saved_model = text_format.Parse(text.read_text(), saved_model_pb2.SavedModel())
    else:
        raise FileNotFoundError(f"no saved_model.pb or saved_model.pbtxt in {version_dir}")
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == tags:
            signature_map = get_model_metadata_pb2.SignatureDefMap(signature_def=meta_graph.signature_def)
            return _ops._metadata("", 0, signature_map).signatures
    raise ValueError(f"{version_dir}: no MetaGraphDef tagged {sorted(tags)}")


def predict_log(
    model: str, inputs: Mapping[str, Any], signature: str | None = None, outputs: Sequence[str] | None = None
) -> Any:
    from aspired_client._pb.tensorflow_serving.apis import prediction_log_pb2

    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.CopyFrom(_ops.predict_request(model, inputs, None, None, signature, outputs))
    return log


def examples_log(
    method: str, model: str, examples: Sequence[Features], context: Features | None, signature: str | None
) -> Any:
    """A classify_log or regress_log (`method` is `classify` or `regress`)."""
    from aspired_client._pb.tensorflow_serving.apis import prediction_log_pb2

    log = prediction_log_pb2.PredictionLog()
    request = log.classify_log.request if method == "classify" else log.regress_log.request
    _ops.model_spec(request.model_spec, model, None, None, signature)
    _ops._input(request.input, examples, context)
    return log


def read_warmup_file(path: Path) -> list[Any]:
    from aspired_client._pb.tensorflow_serving.apis import prediction_log_pb2

    return [prediction_log_pb2.PredictionLog.FromString(r) for r in tfrecord.read_records(path)]


def write_warmup_file(version_dir: Path, logs: Iterable[Any], *, append: bool = False) -> Path:
    """Write (or with `append`, extend) the version's warmup file; returns its path."""
    path = version_dir / WARMUP_FILE
    records = list(tfrecord.read_records(path)) if append and path.exists() else []
    records.extend(log.SerializeToString() for log in logs)
    if len(records) > MAX_RECORDS:
        raise ValueError(f"{len(records)} warmup records; TF Serving reads at most {MAX_RECORDS}")
    tfrecord.write_records(path, records)
    return path
