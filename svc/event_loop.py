"""The event loop the server runs on: anyio's asyncio backend, on uvloop where uvloop is installed
(`pip install 'aspired[speed]'`; measured in bench/RESULTS.md, issue 11)."""

from __future__ import annotations

import importlib.util

__all__ = ["backend_options"]


def backend_options() -> dict[str, object]:
    """anyio `backend_options` for `anyio.run(..., backend="asyncio")`."""
    return {"use_uvloop": True} if importlib.util.find_spec("uvloop") is not None else {}
