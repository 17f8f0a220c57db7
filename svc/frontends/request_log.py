"""One record per request: its id, what it resolved to, how long it took — logged as one canonical
`request_finished` line (sampled by `--request_log_sample_rate`) and counted in the metrics.

The record (`svc/request_context.py`) travels with the request in a context variable, so code deep in the
request path (the batcher) can add what only it knows (`batch_size`) without threading it through every call.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import Callable

from svc.errors import Code
from svc.logging import get_logger
from svc.metrics import Metrics
from svc.request_context import RequestRecord, current_request

log = get_logger()

REQUEST_ID_HEADER = "x-request-id"
_MAX_ID = 128


# Generated ids: one random prefix per process and a counter (a uuid4 per request cost more than it told).
_PREFIX = uuid.uuid4().hex[:16]
_COUNTER = itertools.count(1)


def request_id_from(value: str | None) -> str:
    """The caller's id when it sent a sane one, else a fresh one (for the log line only: responses carry an
    id only when the caller sent it, issue 11)."""
    if value and len(value) <= _MAX_ID and value.isprintable():
        return value
    return f"{_PREFIX}-{next(_COUNTER)}"


UNKNOWN_MODEL = "<unknown>"


class RequestLog:
    def __init__(
        self, metrics: Metrics, sample_rate: float = 1.0, is_known_model: Callable[[str], bool] | None = None
    ) -> None:
        self.metrics = metrics
        self._sample_rate = sample_rate
        self._random = random.Random()
        self._is_known = is_known_model

    def start(self, protocol: str, api: str, request_id: str | None = None, model: str = "") -> RequestRecord:
        record = RequestRecord(protocol, api, request_id_from(request_id), time.perf_counter(), model=model)
        current_request.set(record)
        return record

    def finish(self, record: RequestRecord, code: Code, error: str = "") -> None:
        seconds = time.perf_counter() - record.started
        model = record.model
        if model and self._is_known is not None and not self._is_known(model):
            # Metric labels only for models that exist: names from unauthenticated requests must not grow the
            # metrics without bound (issue 10); the log line keeps the name as sent.
            model = UNKNOWN_MODEL
        self.metrics.request(
            protocol=record.protocol, api=record.api, model=model, version=record.version, code=code,
            seconds=seconds, tf_api=record.tf_api,
        )
        if self._sample_rate < 1.0 and self._random.random() >= self._sample_rate:
            return
        fields = {
            "model": record.model, "version": record.version, "signature": record.signature,
            "api": record.api, "protocol": record.protocol, "status": code.name,
            "latency_ms": round(seconds * 1000, 3), "batch_size": record.batch_size,
            "request_id": record.request_id,
        }
        if error:
            log.info("request_finished", **fields, error=error)
        else:
            log.info("request_finished", **fields)
