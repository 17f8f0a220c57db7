"""The record of the request being served, in a context variable: what it resolved to (model, version,
signature) and what the batcher learned (batch size), for its one `request_finished` line and its metrics.

A base module, so that every layer of the request path can add what only it knows without threading the
record through every call. `svc/frontends/request_log.py` starts and finishes records.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class RequestRecord:
    protocol: str
    api: str
    request_id: str
    started: float
    model: str = ""
    version: int | None = None
    signature: str = ""
    batch_size: int | None = None
    tf_api: str | None = None  # the API label of TF Serving's own metrics, None when TF records nothing


current_request: ContextVar[RequestRecord | None] = ContextVar("current_request", default=None)
