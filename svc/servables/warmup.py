"""Model warmup: replay `assets.extra/tf_serving_warmup_requests` against a freshly loaded version before it
becomes AVAILABLE, so its first real request does not pay for graph initialisation.

Mirrors TF Serving's `servables/tensorflow/saved_model_warmup.cc` and `saved_model_warmup_util.cc`: the file
is a TFRecord of `PredictionLog`s, at most 1000 records, each replayed `--num_request_iterations_for_warmup`
times (default once) directly against the loaded session; predict, classify, regress and multi_inference
logs are supported, anything else is UNIMPLEMENTED, and any error fails the load. Also the project's own
TFRecord writer, for building warmup files. Blocking: runs in the loader's thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from tensorflow_serving.apis import prediction_log_pb2

from svc.errors import Code, ServingError, invalid_argument
from svc.inference import predict as api
from svc.servables.saved_model import Servable

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000


def write_records(path: Path, records: Iterable[bytes]) -> None:
    """A TFRecord file written by TensorFlow's own writer (length, masked CRC32C, data, masked CRC32C)."""
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for data in records:
            writer.write(data)


def write_warmup_file(version_dir: Path, logs: Iterable[prediction_log_pb2.PredictionLog]) -> Path:
    path = version_dir / WARMUP_FILE
    write_records(path, (log.SerializeToString() for log in logs))
    return path


def read_records(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file, read by TensorFlow's C++ reader: it checks both CRCs of every record
    and releases the GIL while it reads, so a large warmup file does not stall requests (issue 10).
    Raises ServingError DATA_LOSS (TF Serving's text) for a corrupt or truncated file."""
    import tensorflow as tf
    from tensorflow.python.lib.io import tf_record

    try:
        yield from tf_record.tf_record_iterator(str(path))
    except tf.errors.OpError as exc:
        raise ServingError(
            Code.DATA_LOSS, f"{exc.message}. Please verify your warmup data is in TFRecord format."
        ) from exc


def load_logs(path: Path) -> list[prediction_log_pb2.PredictionLog]:
    """The warmup records of a version, with TF Serving's errors."""
    logs = []
    for count, record in enumerate(read_records(path), start=1):
        if count > MAX_RECORDS:  # TF Serving stops at the 1001st record; the rest of the file is not read
            raise invalid_argument(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(record)
        except DecodeError as exc:
            raise invalid_argument(f"Failed to parse warmup record: {record!r} from {path}") from exc
        logs.append(log)
    return logs


def replay(servable: Servable, log: prediction_log_pb2.PredictionLog, method_name_check: bool = False) -> None:
    """Run one logged request against `servable` directly (its model_spec name and version do not route)."""
    from svc.inference import classify_regress as inference

    match log.WhichOneof("log_type"):
        case "predict_log":
            request = log.predict_log.request
            signature = api.predict_signature(servable, request.model_spec.signature_name)
            feeds = api.feeds_for(signature, request.inputs, api.MAX_TENSOR_ELEMENTS)
            aliases = api.outputs_for(signature, request.output_filter)
            servable.run(feeds, [signature.outputs[a].name for a in aliases])
        case "classify_log":
            spec, model_input = log.classify_log.request.model_spec, log.classify_log.request.input
            _run_examples(servable, spec.signature_name, model_input, inference.CLASSIFY_METHOD, method_name_check)
        case "regress_log":
            spec, model_input = log.regress_log.request.model_spec, log.regress_log.request.input
            _run_examples(servable, spec.signature_name, model_input, inference.REGRESS_METHOD, method_name_check)
        case "multi_inference_log":
            request = log.multi_inference_log.request
            for task in request.tasks:
                if task.method_name not in (inference.CLASSIFY_METHOD, inference.REGRESS_METHOD):
                    raise ServingError(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}")
                _run_examples(servable, task.model_spec.signature_name, request.input, task.method_name,
                              method_name_check)
        case None:
            return
        case other:
            number = prediction_log_pb2.PredictionLog.DESCRIPTOR.fields_by_name[other].number
            raise ServingError(Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {number}")


def _run_examples(servable: Servable, signature_name: str, model_input: Any, method: str, check: bool) -> None:
    """Classify or Regress (by `method`) on the version itself, as TF Serving's warmup does."""
    from svc.inference import classify_regress as inference

    preprocess, postprocess = inference.EXAMPLE_METHODS[method]
    signature = inference.find_signature(servable, signature_name, method, check)
    input_name, output_names = preprocess(signature, check)
    examples = inference.serialized_examples(model_input)
    outputs = servable.run({input_name: examples}, output_names)
    postprocess(signature, len(examples), output_names, outputs)


def warm_up(servable: Servable, local_dir: str, iterations: int = 0, method_name_check: bool = False) -> int:
    """Replay the version's warmup file, if it has one; returns the number of requests run."""
    path = Path(local_dir) / WARMUP_FILE
    if not path.is_file():
        return 0
    logs = load_logs(path)
    repeat = iterations if iterations > 0 else 1
    runnable = [log for log in logs if log.WhichOneof("log_type") is not None]  # no log_type: skipped
    for log in runnable:
        for _ in range(repeat):
            replay(servable, log, method_name_check)
    return len(runnable) * repeat
