"""The process's one logging configuration, made before anything logs: JSON lines at debug level. In-process
servers (tests/e2e/server.py) send their lines to their own sinks; everything else goes to stdout."""

from __future__ import annotations

from svc.logging import configure_logging

configure_logging("json", "debug")
