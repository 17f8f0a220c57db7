"""Serving-map and state snapshots, published by the model owner to every frontend worker on each change.

The owner side (`Publisher`) turns the serving map (versions, labels, SignatureDefs) and the state monitor's
table into one message per change, and *leases* every version it publishes to a frontend: the lease is a
serving-map lease on the real servable (`ServableHandle`), so the owner's unload, which waits until no
lease holds a version, also waits for every frontend that could still send a request for it. A frontend
returns a lease (`released`) once a snapshot without that version is applied and no local request holds its
proxy: a frontend never resolves a version the owner no longer holds.

The frontend side (`Mirror`) rebuilds a `ServingMapHolder` of `RemoteServable` proxies and a `StateMonitor`
table from each snapshot, so status, metadata and ModelSpec resolution are answered locally.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import anyio
from tensorflow.core.protobuf import meta_graph_pb2

from svc.errors import Code
from svc.lifecycle.messages import ServableId
from svc.lifecycle.serving_map import ModelEntry, ServableHandle, ServingMapHolder
from svc.lifecycle.state_monitor import StateMonitor, VersionStatus
from svc.lifecycle.states import State
from svc.servables.saved_model import Servable

# ("snapshot", seq, models, signatures, status, configured, ready, draining)
#   models: {name: ({version: token}, {label: version})}; signatures: {token: MetaGraphDef bytes} (new only)
#   status: {name: {version: (state, code, message, seq)}}


class ServableTokens:
    """A stable integer per loaded servable object (a version loaded again gets a new token)."""

    def __init__(self) -> None:
        self._tokens: weakref.WeakKeyDictionary[Servable, int] = weakref.WeakKeyDictionary()
        self._next = itertools.count(1)

    def token(self, servable: Servable) -> int:
        token = self._tokens.get(servable)
        if token is None:
            token = self._tokens[servable] = next(self._next)
        return token


@dataclass
class Lease:
    """What one frontend may still use: token -> a lease on the servable."""

    held: dict[int, ServableHandle[Servable]] = field(default_factory=dict)
    sent_signatures: set[int] = field(default_factory=set)

    def release(self, token: int) -> None:
        handle = self.held.pop(token, None)
        if handle is not None:
            handle.release()

    def release_all(self) -> None:
        for token in list(self.held):
            self.release(token)


class Publisher:
    """Owner side: builds the snapshot message for one frontend, taking leases on what it names."""

    def __init__(
        self, serving_map: ServingMapHolder[Servable], monitor: StateMonitor, configured: Callable[[], Sequence[str]]
    ) -> None:
        self._map = serving_map
        self._monitor = monitor
        self._configured = configured
        self.tokens = ServableTokens()
        self._seq = itertools.count(1)

    def message(self, lease: Lease, *, ready: bool, draining: bool) -> tuple[Any, ...]:
        models: dict[str, tuple[dict[int, int], dict[str, int]]] = {}
        signatures: dict[int, bytes] = {}
        for name, entry in self._map.current.models.items():
            versions: dict[int, int] = {}
            for version, servable in entry.versions.items():
                token = self.tokens.token(servable)
                if token not in lease.held:  # in the current map: not unloading
                    lease.held[token] = ServableHandle(ServableId(name, version), servable, self._map.leases)
                if token not in lease.sent_signatures:
                    signatures[token] = servable.meta_graph.SerializeToString()
                    lease.sent_signatures.add(token)
                versions[version] = token
            models[name] = (versions, dict(entry.labels))
        status = {
            name: {v: (int(s.state), int(s.code), s.message, s.seq) for v, s in versions_.items()}
            for name, versions_ in self._monitor.snapshot().items()
        }
        return ("snapshot", next(self._seq), models, signatures, status, list(self._configured()), ready,
                draining)


class RemoteServable(Servable):
    """A frontend's stand-in for a version the owner holds: signatures and request accounting, no session."""

    def __init__(self, name: str, version: int, token: int, meta_graph: meta_graph_pb2.MetaGraphDef) -> None:
        super().__init__(name, version, "", None, meta_graph)
        self.token = token

    def run(self, feeds: Mapping[str, Any], fetches: Sequence[str], timeout_ms: int | None = None) -> list[Any]:
        raise RuntimeError("a frontend worker runs no model: requests go to the model owner")

    def close(self) -> None:
        pass


class MirrorMonitor(StateMonitor):
    """The owner's state table as last published (GetModelStatus, readiness)."""

    def __init__(self) -> None:
        self._table: dict[str, dict[int, VersionStatus]] = {}
        self._changed = anyio.Event()
        self.events_seen = 0

    async def run(self) -> None:
        raise RuntimeError("a mirror is fed snapshots, not events")

    def replace_table(self, table: dict[str, dict[int, VersionStatus]], seq: int) -> None:
        self._table = table
        self.events_seen = seq
        self._changed.set()
        self._changed = anyio.Event()


class Mirror:
    """Frontend side: the serving map and state table of the last snapshot."""

    def __init__(self) -> None:
        self.serving_map = ServingMapHolder[Servable]()
        self.monitor = MirrorMonitor()
        self.configured: tuple[str, ...] = ()
        self.owner_ready = False
        self.draining = False
        self.seq = 0
        self._proxies: dict[int, RemoteServable] = {}
        self._signatures: dict[int, meta_graph_pb2.MetaGraphDef] = {}

    def apply(self, message: tuple[Any, ...]) -> list[RemoteServable]:
        """Install a snapshot; returns the proxies it dropped (their leases go back once they are idle)."""
        _, seq, models, signatures, status, configured, ready, draining = message
        for token, data in signatures.items():
            meta_graph = meta_graph_pb2.MetaGraphDef()
            meta_graph.ParseFromString(data)
            self._signatures[token] = meta_graph
        entries: dict[str, ModelEntry[Servable]] = {}
        live: dict[int, RemoteServable] = {}
        for name, (versions, labels) in models.items():
            proxies: dict[int, Servable] = {}
            for version, token in versions.items():
                proxy = self._proxies.get(token)
                if proxy is None:
                    proxy = RemoteServable(name, version, token, self._signatures[token])
                live[token] = proxies[version] = proxy
            entries[name] = ModelEntry(MappingProxyType(proxies), MappingProxyType(dict(labels)))
        dropped = [proxy for token, proxy in self._proxies.items() if token not in live]
        for proxy in dropped:
            self._signatures.pop(proxy.token, None)
        self._proxies = live
        self.serving_map.replace(entries)
        self.configured = tuple(configured)
        self.owner_ready, self.draining, self.seq = bool(ready), bool(draining), seq
        table = {
            name: {int(v): VersionStatus(State(s), Code(c), m, q) for v, (s, c, m, q) in versions_.items()}
            for name, versions_ in status.items()
        }
        self.monitor.replace_table(table, seq)
        return dropped


def tokens_of(proxies: Iterable[RemoteServable]) -> list[int]:
    return [p.token for p in proxies]
