"""Model warmup records: reading `assets.extra/tf_serving_warmup_requests` of a version, and writing such files.

Mirrors the reading half of TF Serving's `servables/tensorflow/saved_model_warmup_util.cc`: the file is a
TFRecord of `PredictionLog`s, at most 1000 records, with TF Serving's errors. The replay, through the same
prepare and finish steps as requests, is `svc/inference/warmup.py`. Also the project's own TFRecord writer,
for building warmup files. Blocking: runs in the loader's thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from google.protobuf.message import DecodeError
from tensorflow_serving.apis import prediction_log_pb2

from svc.errors import Code, ServingError, invalid_argument

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
