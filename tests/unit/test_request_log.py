"""Request records: one JSON `request_finished` line per request (sampled), metrics always counted."""

from __future__ import annotations

import json
import time

import pytest
import structlog

from svc.errors import Code
from svc.frontends.request_log import RequestLog, request_id_from
from svc.logging import _LineBuffer, configure_logging, flush_logs
from svc.metrics import Metrics


@pytest.fixture(autouse=True)
def json_logs() -> None:
    structlog.reset_defaults()
    configure_logging("json", "info")


def _output(capsys: pytest.CaptureFixture[str]) -> str:
    flush_logs()  # request lines are buffered (issue 11)
    return capsys.readouterr().out


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize(("rate", "expected"), [(1.0, 50), (0.0, 0)])
def test_sampling_limits_lines_not_metrics(capsys: pytest.CaptureFixture[str], rate: float, expected: int) -> None:
    metrics = Metrics()
    log = RequestLog(metrics, rate)
    for _ in range(50):
        record = log.start("grpc", "Predict", model="m")
        record.tf_api = "Predict"
        record.version = 3
        log.finish(record, Code.OK)
    assert len(lines(_output(capsys))) == expected
    assert metrics.request_count.values[("m", "OK")] == 50


def test_partial_sampling_is_roughly_the_rate(capsys: pytest.CaptureFixture[str]) -> None:
    log = RequestLog(Metrics(), 0.25)
    for _ in range(2000):
        log.finish(log.start("rest", "predict"), Code.OK)
    assert 350 < len(lines(_output(capsys))) < 650


def test_line_has_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    log = RequestLog(Metrics())
    record = log.start("rest", "predict", "abc", model="m")
    record.version, record.signature, record.batch_size = 1, "serving_default", 8
    log.finish(record, Code.INVALID_ARGUMENT, "bad input")
    [line] = lines(_output(capsys))
    assert line["event"] == "request_finished"
    assert {k: line[k] for k in ("model", "version", "signature", "api", "status", "batch_size", "request_id")} == {
        "model": "m", "version": 1, "signature": "serving_default", "api": "predict",
        "status": "INVALID_ARGUMENT", "batch_size": 8, "request_id": "abc",
    }
    assert isinstance(line["latency_ms"], float)


@pytest.mark.parametrize(("given", "kept"), [("abc-1", True), ("", False), (None, False), ("x" * 500, False),
                                             ("a\nb", False)])
def test_request_ids(given: str | None, kept: bool) -> None:
    result = request_id_from(given)
    assert (result == given) is kept
    assert result


class _Stream:
    """A stdout that records each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


def _request_line(i: int) -> bytes:
    return b'{"n":%d,"pad":"%s","event":"request_finished"}\n' % (i, b"x" * 200)


def test_request_lines_leave_in_whole_line_chunks_of_at_most_4_kib() -> None:
    # issue 11: request lines are buffered, one write per chunk, never a line split across writes
    buffer = _LineBuffer()
    stream = _Stream()
    for i in range(100):
        buffer.add(_request_line(i), stream)
    buffer.flush()
    assert all(len(w) <= 4096 for w in stream.writes)
    assert len(stream.writes) < 10
    assert b"".join(stream.writes) == b"".join(_request_line(i) for i in range(100))
    assert all(w.endswith(b"\n") for w in stream.writes)


def test_other_lines_leave_at_once_after_the_buffered_ones() -> None:
    buffer = _LineBuffer()
    stream = _Stream()
    buffer.add(_request_line(1), stream)
    assert stream.writes == []
    buffer.write_now(b'{"event":"server_stopped"}\n', stream)
    assert stream.writes == [_request_line(1), b'{"event":"server_stopped"}\n']


def test_buffered_request_lines_are_written_soon_without_a_flush() -> None:
    buffer = _LineBuffer()
    stream = _Stream()
    buffer.add(_request_line(1), stream)
    deadline = time.monotonic() + 5
    while not stream.writes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.writes == [_request_line(1)]
