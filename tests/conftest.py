"""Process-wide test configuration, made before anything runs:

- the one logging configuration: JSON lines at debug level. In-process servers (tests/e2e/server.py) send
  their lines to their own sinks; everything else goes to stdout.
- Hypothesis derandomized (issue 9: a run cannot flake): every run tries the same examples, chosen from a
  hash of the test, and keeps no example database. New examples come from changing a test or its strategy.
"""

from __future__ import annotations

from hypothesis import settings

from svc.logging import configure_logging

configure_logging("json", "debug")

settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")
