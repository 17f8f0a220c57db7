"""Request records: one JSON `request_finished` line per request (sampled), metrics always counted."""

from __future__ import annotations

import json

import pytest
import structlog

from svc.errors import Code
from svc.frontends.request_log import RequestLog, request_id_from
from svc.logging import configure_logging
from svc.metrics import Metrics


@pytest.fixture(autouse=True)
def json_logs() -> None:
    structlog.reset_defaults()
    configure_logging("json", "info")


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
    assert len(lines(capsys.readouterr().out)) == expected
    assert metrics.request_count.values[("m", "OK")] == 50


def test_partial_sampling_is_roughly_the_rate(capsys: pytest.CaptureFixture[str]) -> None:
    log = RequestLog(Metrics(), 0.25)
    for _ in range(2000):
        log.finish(log.start("rest", "predict"), Code.OK)
    assert 350 < len(lines(capsys.readouterr().out)) < 650


def test_line_has_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    log = RequestLog(Metrics())
    record = log.start("rest", "predict", "abc", model="m")
    record.version, record.signature, record.batch_size = 1, "serving_default", 8
    log.finish(record, Code.INVALID_ARGUMENT, "bad input")
    [line] = lines(capsys.readouterr().out)
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
