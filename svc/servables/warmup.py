"""Model warmup: replay `assets.extra/tf_serving_warmup_requests` against a freshly loaded version before it
becomes AVAILABLE, so its first real request does not pay for graph initialisation.

Mirrors TF Serving's `servables/tensorflow/saved_model_warmup.cc` and `saved_model_warmup_util.cc`: the file
is a TFRecord of `PredictionLog`s, at most 1000 records, each replayed `--num_request_iterations_for_warmup`
times (default once) directly against the loaded session; predict, classify, regress and multi_inference
logs are supported, anything else is UNIMPLEMENTED, and any error fails the load. Also the project's own
TFRecord writer, for building warmup files. Blocking: runs in the loader's thread.
"""

from __future__ import annotations

import struct
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


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_records(path: Path, records: Iterable[bytes]) -> None:
    """TFRecord framing: length (uint64 LE), masked CRC32C of the length, data, masked CRC32C of the data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for data in records:
            length = struct.pack("<Q", len(data))
            out.write(length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data)))


def write_warmup_file(version_dir: Path, logs: Iterable[prediction_log_pb2.PredictionLog]) -> Path:
    path = version_dir / WARMUP_FILE
    write_records(path, (log.SerializeToString() for log in logs))
    return path


class CorruptRecord(Exception):
    pass


def read_records(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 12]
        if len(header) < 12:
            raise CorruptRecord(f"Truncated record at byte {offset}")
        (length,) = struct.unpack("<Q", header[:8])
        if struct.unpack("<I", header[8:])[0] != masked_crc(header[:8]):
            raise CorruptRecord(f"Corrupted record at {offset}")
        body = data[offset + 12 : offset + 12 + length]
        footer = data[offset + 12 + length : offset + 16 + length]
        if len(body) < length or len(footer) < 4:
            raise CorruptRecord(f"Truncated record at byte {offset}")
        if struct.unpack("<I", footer)[0] != masked_crc(body):
            raise CorruptRecord(f"Corrupted record at {offset}")
        yield body
        offset += 16 + length


def load_logs(path: Path) -> list[prediction_log_pb2.PredictionLog]:
    """The warmup records of a version, with TF Serving's errors."""
    logs = []
    try:
        for count, record in enumerate(read_records(path), start=1):
            if count > MAX_RECORDS:
                raise invalid_argument(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
            log = prediction_log_pb2.PredictionLog()
            try:
                log.ParseFromString(record)
            except DecodeError as exc:
                raise invalid_argument(f"Failed to parse warmup record: {record!r} from {path}") from exc
            logs.append(log)
    except CorruptRecord as exc:
        raise ServingError(
            Code.DATA_LOSS, f"{exc}. Please verify your warmup data is in TFRecord format."
        ) from exc
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
