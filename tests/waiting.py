"""The one way tests wait: for a condition, with a generous deadline, never for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | None], timeout: float = 60.0, *, interval: float = 0.02, message: str | Callable[[], str] = ""
) -> T:
    """Poll `predicate` until it returns a true value (returned), or raise TimeoutError after `timeout` seconds.

    The deadline is a bound for a broken test, not a measurement: make it long enough for a loaded 2-core
    machine. An exception from `predicate` propagates at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise TimeoutError(f"condition not met within {timeout} s{': ' + text if text else ''}")
        time.sleep(interval)
