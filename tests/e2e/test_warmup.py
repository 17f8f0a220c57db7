"""Warmup files built with the project's own TFRecord writer: replayed before a version becomes AVAILABLE,
with TF Serving's limits and error texts."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc

from svc.servables.warmup import WARMUP_FILE, load_logs, read_records, write_records, write_warmup_file
from tests.e2e.server import Server
from tests.paths import testdata

pytestmark = pytest.mark.e2e

COUNTER = testdata("saved_model_counter") / "00000123"


def counter_log(signature: str) -> prediction_log_pb2.PredictionLog:
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.model_spec.name = "ignored"
    log.predict_log.request.model_spec.signature_name = signature
    return log


def get_counter(target: str) -> float:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "counter"
    request.model_spec.signature_name = "get_counter"
    with grpc.insecure_channel(target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    return float(response.outputs["output"].float_val[0])


def test_tfrecord_framing_matches_tensorflow(tmp_path: Path) -> None:
    path = tmp_path / "records"
    write_records(path, [b"hello", b"", b"x" * 1000])
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == [b"hello", b"", b"x" * 1000]
    tf_path = tmp_path / "tf_records"
    with tf.io.TFRecordWriter(str(tf_path)) as writer:
        writer.write(b"abc")
    assert list(read_records(tf_path)) == [b"abc"]


def test_warmup_runs_before_available(tmp_path: Path) -> None:
    version = tmp_path / "counter" / "1"
    shutil.copytree(COUNTER, version)
    write_warmup_file(version, [counter_log("incr_counter")] * 3 + [prediction_log_pb2.PredictionLog()])
    server = Server(
        ["--model_name=counter", f"--model_base_path={version.parent}", "--num_request_iterations_for_warmup=2"]
    )
    with server:
        assert get_counter(server.grpc_target) == 6.0  # 3 records x 2 iterations ran before AVAILABLE
        events = [e for e in server.log_events() if e.get("event") == "servable_warmed_up"]
        assert events[0]["requests"] == 6


def test_warmup_disabled(tmp_path: Path) -> None:
    version = tmp_path / "counter" / "1"
    shutil.copytree(COUNTER, version)
    write_warmup_file(version, [counter_log("incr_counter")])
    server = Server(
        ["--model_name=counter", f"--model_base_path={version.parent}", "--enable_model_warmup=false"]
    )
    with server:
        assert get_counter(server.grpc_target) == 0.0


def test_warmup_predict_with_inputs_on_half_plus_two(tmp_path: Path) -> None:
    version = tmp_path / "m" / "1"
    shutil.copytree(testdata("saved_model_half_plus_two_cpu") / "00000123", version)
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0]], np.float32)))
    classify = prediction_log_pb2.PredictionLog()
    classify.classify_log.request.model_spec.signature_name = "classify_x_to_y"
    example = classify.classify_log.request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.append(1.0)
    write_warmup_file(version, [log, classify])
    with Server(["--model_name=m", f"--model_base_path={version.parent}"]) as server:
        assert any(e.get("event") == "servable_warmed_up" for e in server.log_events())


def flip_payload_byte(path: Path) -> None:
    write_records(path, [b"payload"])
    path.write_bytes(path.read_bytes().replace(b"payload", b"pAyload"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda p: p.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00garbage"),
         "Please verify your warmup data is in TFRecord format."),
        (flip_payload_byte,
         "Please verify your warmup data is in TFRecord format."),  # data CRC checked by TF's reader (issue 10)
        (lambda p: write_records(p, [b"\xff\xff\xff"]), "Failed to parse warmup record:"),
        (lambda p: write_records(p, [counter_log("incr_counter").SerializeToString()] * 1001),
         "Number of warmup records exceeds the maximum (1000) at "),
    ],
    ids=["corrupt", "bad-crc", "unparseable", "too-many"],
)
def test_bad_warmup_file_fails_the_load(tmp_path: Path, content: object, message: str) -> None:
    version = tmp_path / "counter" / "1"
    shutil.copytree(COUNTER, version)
    path = version / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    content(path)  # type: ignore[operator]
    from svc.errors import ServingError

    with pytest.raises(ServingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_logs(path)
    server = Server(
        ["--model_name=counter", f"--model_base_path={version.parent}", "--max_num_load_retries=0"]
    )
    with pytest.raises(RuntimeError, match="exited with 255"):
        server.start()
    assert message in server.output()
    server.stop()


def test_unsupported_log_type_fails_the_load(tmp_path: Path) -> None:
    version = tmp_path / "counter" / "1"
    shutil.copytree(COUNTER, version)
    log = prediction_log_pb2.PredictionLog()
    log.session_run_log.request.model_spec.name = "x"
    write_warmup_file(version, [log])
    server = Server(["--model_name=counter", f"--model_base_path={version.parent}", "--max_num_load_retries=0"])
    with pytest.raises(RuntimeError, match="exited with 255"):
        server.start()
    assert "Unsupported log_type for warmup: 5" in server.output()
    server.stop()
