"""Actor tests run on asyncio in debug mode with blockbuster watching: a blocking call made on the event
loop (TensorFlow work, file I/O, sleeps leaking out of a thread) fails the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from blockbuster import blockbuster_ctx


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    return "asyncio", {"debug": True}


@pytest.fixture(autouse=True)
def no_blocking_on_the_loop(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("anyio") is None:
        yield
        return
    with blockbuster_ctx(["svc", "tests"]):
        yield
