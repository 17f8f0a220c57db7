"""Readiness: one answer for the REST probes and the gRPC health service.

Ready means every configured model has at least one AVAILABLE version and the server is not draining; a
model loading a new version while an old one serves stays ready. TF Serving has no readiness URL
(tfs#1754) and its gRPC health service says SERVING as soon as it is enabled; here both track this state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio
from grpclib.health.check import ServiceStatus

from svc.lifecycle.state_monitor import StateMonitor
from svc.lifecycle.states import State


class Readiness:
    def __init__(self, monitor: StateMonitor, configured: Callable[[], Sequence[str]]) -> None:
        self._monitor = monitor
        self._configured = configured
        self.draining = False
        self.status = ServiceStatus()  # shared by "" and both TF Serving services
        self._poke = anyio.Event()

    def models_not_ready(self) -> list[str]:
        table = self._monitor.snapshot()
        return [
            name for name in self._configured()
            if not any(s.state is State.AVAILABLE for s in table.get(name, {}).values())
        ]

    def ready(self) -> bool:
        return not self.draining and not self.models_not_ready()

    def start_draining(self) -> None:
        self.draining = True
        self.status.set(False)
        self._poke.set()

    async def run(self) -> None:
        """Keep the gRPC health status equal to `ready()`."""
        while True:
            self.status.set(self.ready())
            with anyio.move_on_after(1.0):
                await self._monitor.wait_changed()
            if self._poke.is_set():
                self._poke = anyio.Event()
