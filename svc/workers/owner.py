"""The model owner's side of `--frontend_workers=N`: starts, feeds, watches and restarts N frontend worker
processes, runs what they send through the one Batcher (so batches fill across all of them and each model is
held once), publishes serving-map snapshots to them, and drains them on shutdown.

Per frontend (`Link`): a control socketpair (small pickled headers) and two shared-memory arenas (feeds in,
outputs out; `svc.workers.transport`). A frontend that dies loses only its own in-flight calls: its runs are
cancelled here, its leases returned, and a new process takes its place. If the owner dies, every frontend sees
its control socket close and exits, so the server ends non-zero as a whole.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process, TaskGroup
from tensorflow_serving.config import model_server_config_pb2

import svc
from svc import options as opts
from svc.errors import Code, ServingError
from svc.inference.core import Core
from svc.lifecycle.config_watcher import ConfigWatcher
from svc.lifecycle.readiness import Readiness
from svc.lifecycle.serving_map import ModelEntry, ServingMapHolder
from svc.logging import get_logger
from svc.request_context import RequestRecord, current_request
from svc.servables.saved_model import Servable
from svc.workers.aggregate import merge_expositions
from svc.workers.frontend import bind_shared
from svc.workers.snapshot import Lease, Publisher
from svc.workers.transport import (
    DEFAULT_ARENA_BYTES,
    Arena,
    ArrayRef,
    Channel,
    create_segment,
    read_feeds,
    write_arrays,
)

log = get_logger(actor="frontend_workers")

RESTART_BACKOFF_MAX = 5.0
_PACKAGE_ROOT = str(Path(svc.__file__).resolve().parent.parent)  # where a worker process imports svc from
SCRAPE_TIMEOUT = 5.0


class PublishedServingMap(ServingMapHolder[Servable]):
    """The serving map, telling the workers' publisher about every swap."""

    def __init__(self) -> None:
        super().__init__()
        self.on_change: Callable[[], None] = lambda: None

    def replace(self, models: Mapping[str, ModelEntry[Servable]]) -> None:
        super().replace(models)
        self.on_change()


@dataclass
class Link:
    """One frontend process as the owner sees it."""

    index: int
    process: Process
    channel: Channel
    feeds: Arena  # written by the frontend, read here
    outputs: Arena  # written here, read by the frontend
    lease: Lease = field(default_factory=Lease)
    inflight: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    listening: bool = False
    alive: bool = True
    closed: anyio.Event = field(default_factory=anyio.Event)  # its control socket reached EOF
    started: float = field(default_factory=anyio.current_time)


@dataclass
class Ports:
    """Where the frontends listen: a port each binds with SO_REUSEPORT, or a listening socket handed to all
    of them (the UNIX socket; sockets `serve` was given), which they then accept from together."""

    grpc: int
    rest: int
    unix: socket.socket | None
    reserved: list[socket.socket] = field(default_factory=list)  # bound, not listening: holds the ports
    grpc_listener: socket.socket | None = None
    rest_listener: socket.socket | None = None

    def handed(self) -> list[socket.socket]:
        return [s for s in (self.unix, self.grpc_listener, self.rest_listener) if s is not None]

    def spec(self) -> tuple[Any, ...]:
        """(gRPC, REST, UNIX) as a frontend receives them: ("port", P), ("fd", N) or None each."""
        def one(port: int, listener: socket.socket | None) -> tuple[str, int] | None:
            if listener is not None:
                return ("fd", listener.fileno())
            return ("port", port) if port else None

        return (one(self.grpc, self.grpc_listener), one(self.rest, self.rest_listener),
                None if self.unix is None else self.unix.fileno())

    def close(self) -> None:
        for sock in [*self.reserved, *self.handed()]:
            sock.close()


class FrontendWorkers:
    def __init__(
        self, options: opts.Options, core: Core, watcher: ConfigWatcher, readiness: Readiness,
        serving_map: PublishedServingMap,
    ) -> None:
        self._options = options
        self._core = core
        self._watcher = watcher
        self._readiness = readiness
        # Readiness waits for the configured models less those explicitly unloaded (V2 repository extension).
        self._publisher = Publisher(serving_map, core.monitor, watcher.served_names)
        serving_map.on_change = self._poke
        self._links: dict[int, Link] = {}
        self._stopping = False
        self._wake: anyio.Event | None = None
        self._all_listening: anyio.Event | None = None
        self._scrapes: dict[int, asyncio.Future[bytes]] = {}
        self._ids = itertools.count(1)
        self._stopped: anyio.Event = anyio.Event()  # set when the last link closes while stopping

    # -- publication --------------------------------------------------------------------------------
    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _ready(self) -> bool:
        listening = sum(link.listening for link in self._links.values())
        return self._readiness.ready() and listening == self._options.frontend_workers

    def _publish(self, link: Link) -> None:
        if link.alive:
            link.channel.send(self._publisher.message(
                link.lease, ready=self._ready(), draining=self._readiness.draining))

    async def _publish_loop(self) -> None:
        while True:
            self._wake = anyio.Event()
            for link in list(self._links.values()):
                self._publish(link)
            await self._wake.wait()

    async def _watch_monitor(self) -> None:
        while True:
            await self._core.monitor.wait_changed()
            self._poke()

    # -- processes ----------------------------------------------------------------------------------
    async def _spawn(self, index: int, ports: Ports) -> Link:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        feeds_fd, outputs_fd = create_segment(DEFAULT_ARENA_BYTES), create_segment(DEFAULT_ARENA_BYTES)
        fds = [child.fileno(), feeds_fd, outputs_fd]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        try:
            process = await anyio.open_process(
                [sys.executable, "-m", "svc.workers.frontend_main", *(str(fd) for fd in fds), str(index)],
                stdin=subprocess.DEVNULL, stdout=None, stderr=None, env=env,
                pass_fds=[*fds, *(sock.fileno() for sock in ports.handed())],
            )
        finally:
            child.close()
        link = Link(index, process, await Channel.open(parent), Arena(feeds_fd), Arena(outputs_fd))
        link.channel.send(("hello", self._options, *ports.spec()))
        self._links[index] = link
        self._publish(link)
        log.info("frontend_worker_started", index=index, pid=process.pid)
        return link

    async def _supervise(self, index: int, ports: Ports) -> None:
        failures = 0
        while not self._stopping:
            started = anyio.current_time()
            link = await self._spawn(index, ports)
            code = await self._serve_link(link)
            if self._stopping:
                log.info("frontend_worker_stopped", index=index, returncode=code)
                if not self._links:
                    self._stopped.set()
                break
            if not link.listening and self._all_listening is not None and not self._all_listening.is_set():
                from svc.server import StartupError

                raise StartupError(f"UNAVAILABLE: frontend worker {index} exited with status {code} at start-up")
            log.error("frontend_worker_exited", index=index, pid=link.process.pid, returncode=code,
                      message="restarting it; its in-flight calls failed")
            failures = failures + 1 if anyio.current_time() - started < 10 else 0
            await anyio.sleep(min(RESTART_BACKOFF_MAX, 0.05 * 2**failures))

    async def _serve_link(self, link: Link) -> int:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._read_link, link, tg)
            code = await link.process.wait()
            with anyio.move_on_after(1):  # the last messages it wrote before exiting
                await link.closed.wait()
            tg.cancel_scope.cancel()
        link.alive = False
        runs = list(link.inflight.values())
        for run in runs:
            run.cancel()
        if runs:  # TensorFlow may still read the arena's feeds and hold the version: wait for it first
            with anyio.CancelScope(shield=True):
                await asyncio.wait(runs)
        link.lease.release_all()
        self._links.pop(link.index, None)
        link.channel.close()
        link.feeds.close()
        link.outputs.close()
        self._poke()
        return code

    async def _read_link(self, link: Link, tg: TaskGroup) -> None:
        while (message := await link.channel.receive()) is not None:
            match message[0]:
                case "run":
                    # an asyncio task, not one of the task group's: a fifth of the cost per request (issue 15);
                    # `_serve_link` cancels and awaits what is left when the link ends
                    link.inflight[message[1]] = asyncio.get_running_loop().create_task(
                        self._run(link, *message[1:]))
                case "cancel":
                    run = link.inflight.get(message[1])
                    if run is not None:
                        run.cancel()
                case "free":
                    for offset in message[1]:
                        link.outputs.free(offset)
                case "released":
                    link.lease.release(message[1])
                case "listening":
                    link.listening = True
                    log.info("frontend_worker_listening", index=link.index, pid=link.process.pid,
                             seconds=round(anyio.current_time() - link.started, 3))
                    self._poke()
                    if self._all_listening is not None and all(
                        k.listening for k in self._links.values()
                    ) and len(self._links) == self._options.frontend_workers:
                        self._all_listening.set()
                case "reload":
                    tg.start_soon(self._reload, link, message[1], message[2])
                case "repository":
                    tg.start_soon(self._repository, link, *message[1:])
                case "scrape":
                    tg.start_soon(self._scrape, link, message[1])
                case "part":
                    future = self._scrapes.pop(message[1], None)
                    if future is not None and not future.done():
                        future.set_result(message[2])
                case "drained":
                    pass
                case other:
                    log.error("frontend_worker_message_unknown", index=link.index, kind=other)
        link.alive = False
        link.closed.set()

    # -- requests -----------------------------------------------------------------------------------
    async def _run(
        self, link: Link, rid: int, token: int, refs: dict[str, ArrayRef], fetches: list[str], remaining: float | None
    ) -> None:
        try:
            reply = await self._execute(link, rid, token, refs, fetches, remaining)
        except asyncio.CancelledError:  # the frontend's caller left, or the link ended: this task is ours alone
            reply = ("cancelled", rid)
        finally:
            link.inflight.pop(rid, None)
        if link.alive:
            link.channel.send(reply)

    async def _execute(
        self, link: Link, rid: int, token: int, refs: dict[str, ArrayRef], fetches: list[str], remaining: float | None
    ) -> tuple[Any, ...]:
        handle = link.lease.held.get(token)
        if handle is None:
            return ("err", rid, int(Code.NOT_FOUND), "Servable not found for request: the version was unloaded")
        servable = handle.servable
        record = RequestRecord("worker", "", "", 0.0, model=servable.name, version=servable.version)
        current_request.set(record)
        deadline = None if remaining is None else anyio.current_time() + remaining
        try:
            outputs = await self._core.batcher.submit(
                servable, read_feeds(link.feeds.buf, refs), fetches, deadline=deadline)
            out_refs = await write_arrays(link.outputs, outputs)
        except ServingError as exc:
            return ("err", rid, int(exc.code), exc.message)
        except Exception:
            log.exception("worker_run_crashed", model=servable.name, version=servable.version)
            return ("err", rid, int(Code.INTERNAL), "Internal error")
        return ("ok", rid, out_refs, record.batch_size)

    async def _reload(self, link: Link, rid: int, data: bytes) -> None:
        config = model_server_config_pb2.ModelServerConfig()
        config.ParseFromString(data)
        try:
            await self._watcher.reload(config, request=True)
            reply: tuple[Any, ...] = ("reloaded", rid)
        except ServingError as exc:
            reply = ("err", rid, int(exc.code), exc.message)
        self._publish(link)  # the caller sees the models its reload added as soon as it is answered
        if link.alive:
            link.channel.send(reply)

    async def _repository(self, link: Link, rid: int, action: str, name: str) -> None:
        """The Open Inference Protocol's repository calls of a frontend, done by the ConfigWatcher here."""
        reply: tuple[Any, ...]
        try:
            if action == "models":
                names, unloaded = await self._watcher.repository_models()
                reply = ("models", rid, list(names), sorted(unloaded))
            else:
                await (self._watcher.load_model if action == "load" else self._watcher.unload_model)(name)
                reply = ("done", rid)
        except ServingError as exc:
            reply = ("err", rid, int(exc.code), exc.message)
        self._publish(link)  # the caller sees the state it waited for as soon as it is answered
        if link.alive:
            link.channel.send(reply)

    async def _scrape(self, link: Link, rid: int) -> None:
        assert self._core.metrics is not None
        pages = [self._core.metrics.render()]
        loop = asyncio.get_running_loop()
        waiting: list[asyncio.Future[bytes]] = []
        for other in list(self._links.values()):
            sid = next(self._ids)
            self._scrapes[sid] = future = loop.create_future()
            waiting.append(future)
            other.channel.send(("scrape_part", sid))
        with anyio.move_on_after(SCRAPE_TIMEOUT):
            await asyncio.wait(waiting)
        pages += [f.result() for f in waiting if f.done() and not f.cancelled()]
        if link.alive:
            link.channel.send(("scraped", rid, merge_expositions(pages)))

    # -- the whole life ---------------------------------------------------------------------------------
    async def serve(
        self, tg: TaskGroup, ports: Ports, shutdown_trigger: Callable[[], Awaitable[object]] | None = None
    ) -> None:
        """Start every frontend, log TF Serving's lines once all listen, drain on SIGTERM/SIGINT (or when
        `shutdown_trigger`'s awaitable completes: then no signal handlers)."""
        self._all_listening = anyio.Event()
        tg.start_soon(self._publish_loop)
        tg.start_soon(self._watch_monitor)
        async with anyio.create_task_group() as workers:
            for index in range(self._options.frontend_workers):
                workers.start_soon(self._supervise, index, ports)
            await self._all_listening.wait()
            self._poke()
            _log_listening(self._options, ports)
            if shutdown_trigger is not None:
                await shutdown_trigger()
                log.info("shutdown_requested", trigger=True)
                await self._drain()
            else:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        log.info("shutdown_requested", signal=signal.Signals(signum).name)
                        break
                    tg.start_soon(_exit_on_second_signal, signals)
                    await self._drain()
            workers.cancel_scope.cancel()

    async def _drain(self) -> None:
        """Readiness fails everywhere at once; after `--drain_delay_seconds` every frontend stops accepting
        and finishes its calls (the owner still runs them); then the owner may close its models."""
        self._stopping = True
        self._readiness.start_draining()
        self._poke()
        log.info("drain_started", delay_seconds=self._options.drain_delay_seconds)
        with anyio.move_on_after(self._options.shutdown_grace_seconds + 1) as scope:
            await anyio.sleep(self._options.drain_delay_seconds)
            for link in list(self._links.values()):
                link.channel.send(("drain",))
            await self._stopped.wait()
        if scope.cancelled_caught:
            log.warning("drain_timed_out", grace_seconds=self._options.shutdown_grace_seconds)
            for link in list(self._links.values()):
                link.process.kill()
        log.info("drain_finished")


def reserve_ports(
    options: opts.Options, grpc_listener: socket.socket | None = None, rest_listener: socket.socket | None = None
) -> Ports:
    """Bind (without listening) the ports the frontends share, so a port in use fails start-up here and
    a restarted frontend can always bind again; port 0 picks a free port for all of them."""
    from svc.server import StartupError

    grpc = rest = 0
    unix = None
    reserved: list[socket.socket] = []
    if options.port and grpc_listener is not None:
        grpc = grpc_listener.getsockname()[1]
    elif options.port:
        try:
            grpc_sock = bind_shared("0.0.0.0", options.port)
        except OSError as exc:
            raise StartupError(f"UNAVAILABLE: Could not bind gRPC port {options.port}: {exc.strerror}") from exc
        grpc = grpc_sock.getsockname()[1]
        reserved.append(grpc_sock)
    if options.rest_api_port and options.rest_api_port != options.port and rest_listener is not None:
        rest = rest_listener.getsockname()[1]
    elif options.rest_api_port and options.rest_api_port != options.port:
        try:
            rest_sock = bind_shared("::", options.rest_api_port)
        except OSError as exc:
            raise StartupError(
                f"UNAVAILABLE: Could not bind REST port {options.rest_api_port}: {exc.strerror}"
            ) from exc
        rest = rest_sock.getsockname()[1]
        reserved.append(rest_sock)
    if options.grpc_socket_path:
        path = Path(options.grpc_socket_path)
        if path.exists() and stat.S_ISSOCK(path.stat().st_mode):
            path.unlink()
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(str(path))
        unix.listen(1024)
        unix.set_inheritable(False)
    return Ports(grpc, rest, unix, reserved, grpc_listener if grpc else None, rest_listener if rest else None)


def _log_listening(options: opts.Options, ports: Ports) -> None:
    workers = options.frontend_workers
    if ports.grpc:
        log.info("grpc_server_started", port=ports.grpc, workers=workers,
                 message=f"Running gRPC ModelServer at 0.0.0.0:{ports.grpc} ...")
    if ports.unix is not None:
        log.info("grpc_server_started", socket=options.grpc_socket_path, workers=workers,
                 message=f"Running gRPC ModelServer at UNIX socket {options.grpc_socket_path} ...")
    if options.rest_api_port and options.rest_api_port == options.port:
        log.error("rest_server_not_started", message="--rest_api_port must differ from --port")
    elif ports.rest:
        log.info("rest_server_started", port=ports.rest, workers=workers,
                 message=f"Exporting HTTP/REST API at:localhost:{ports.rest} ...")


async def _exit_on_second_signal(signals: AsyncIterator[int]) -> None:
    async for signum in signals:
        log.warning("shutdown_forced", signal=signal.Signals(signum).name)
        os._exit(1)


async def serve_workers(
    tg: TaskGroup, options: opts.Options, core: Core, watcher: ConfigWatcher, readiness: Readiness,
    serving_map: PublishedServingMap, shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    grpc_listener: socket.socket | None = None, rest_listener: socket.socket | None = None,
) -> None:
    """Serve through frontend workers until SIGTERM/SIGINT (or `shutdown_trigger`), then drain them.
    Listening sockets given here are handed to every worker instead of binding the ports."""
    ports = reserve_ports(options, grpc_listener, rest_listener)
    try:
        await FrontendWorkers(options, core, watcher, readiness, serving_map).serve(tg, ports, shutdown_trigger)
    finally:
        ports.close()


__all__ = ("FrontendWorkers", "PublishedServingMap", "serve_workers")
