"""A frontend worker process: the gRPC and REST stacks, decoding, encoding and request records, without
TensorFlow and without models.

It shares the ports with its siblings (SO_REUSEPORT: the kernel spreads *connections*, so one HTTP/2
connection is always served by one worker), answers status, metadata and ModelSpec resolution from the last
snapshot the owner published (`svc.workers.snapshot.Mirror`), and sends every prepared run (feeds by tensor
name, fetches) to the owner through shared memory (`RemoteBackend`, the in-process `Batcher.submit`'s
remote twin). It exits when the owner's end of its control socket closes, and drains when the owner says so.

Started by `svc.workers.owner` as `python -m svc.workers.frontend_main`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

import anyio
from anyio.abc import TaskGroup
from grpclib.server import Server as GrpcServer
from starlette.requests import Request
from starlette.responses import Response
from tensorflow_serving.config import model_server_config_pb2

from svc import options as opts
from svc.batching.scheduler import Batcher
from svc.errors import Code, ServingError
from svc.frontends import tls
from svc.frontends.envelope import Envelope
from svc.frontends.grpc import RequestLimitCodec
from svc.frontends.grpc import services as grpc_services
from svc.frontends.grpc_server import ChannelServer, channel_settings
from svc.frontends.request_log import RequestLog
from svc.frontends.rest import RestApi, RestOptions, json_response
from svc.frontends.rest_v2 import V2Routes
from svc.inference.core import Core
from svc.lifecycle.messages import ServableId
from svc.lifecycle.readiness import Readiness
from svc.logging import configure_logging, get_logger
from svc.metrics import Metrics
from svc.request_context import current_request
from svc.servables.saved_model import Servable
from svc.workers.snapshot import Mirror, RemoteServable
from svc.workers.transport import Arena, Array, Channel, read_array, write_arrays

log = get_logger(actor="frontend_worker")


def bind_shared(host: str, port: int) -> socket.socket:
    """A listening TCP socket with SO_REUSEPORT, so every worker binds the same port (IPv6 dual-stack for
    `::` where the kernel allows it, as `svc.server.bind_tcp`)."""
    families = [(socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")] if host in ("::", "") else [
        (socket.AF_INET, host)]
    error: OSError | None = None
    for family, address in families:
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((address, port))
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    assert error is not None
    raise error


Listen = tuple[str, int] | None  # ("port", P): bind it with SO_REUSEPORT; ("fd", N): a socket handed down


def listening_socket(host: str, listen: tuple[str, int]) -> socket.socket:
    kind, number = listen
    if kind == "fd":
        sock = socket.socket(fileno=number)
    else:
        sock = bind_shared(host, number)
        sock.listen(1024)
    sock.setblocking(False)
    return sock


class RemoteBackend:
    """The model owner seen from a frontend: `submit` (the Batcher's signature), `reload`, `repository`,
    `scrape`."""

    def __init__(self, channel: Channel, requests: Arena, replies: Arena) -> None:
        self._channel = channel
        self._requests = requests  # this process allocates: feeds
        self._replies = replies  # the owner allocates: outputs
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[tuple[Any, ...]], list[int]]] = {}
        self._frees: list[int] = []

    async def submit(
        self, servable: Servable, feeds: Mapping[str, Array], fetches: Sequence[str], *,
        deadline: float | None = None,
    ) -> list[Array]:
        assert isinstance(servable, RemoteServable)
        refs = await write_arrays(self._requests, list(feeds.values()))
        rid = next(self._ids)
        timeout = None if deadline is None else deadline - anyio.current_time()
        future: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (future, [r.offset for r in refs])
        self._channel.send(("run", rid, servable.token, dict(zip(feeds, refs, strict=True)), list(fetches), timeout))
        try:
            reply = await future
        except BaseException:
            if rid in self._pending:  # the owner still runs it: tell it, free its memory when it answers
                self._channel.send(("cancel", rid))
            raise
        match reply:
            case ("ok", _, out_refs, batch_size):
                outputs = [read_array(self._replies.buf, ref, copy=True) for ref in out_refs]
                self._free_replies([ref.offset for ref in out_refs])
                record = current_request.get()
                if record is not None and batch_size:
                    record.batch_size = batch_size
                return outputs
            case ("err", _, code, message):
                raise ServingError(Code(code), message)
        raise ServingError(Code.UNKNOWN, f"unexpected worker reply {reply[0]}")

    def answer(self, message: tuple[Any, ...]) -> None:
        """A reply from the owner (`ok`, `err`, `cancelled`, `reloaded`, `scraped`)."""
        entry = self._pending.pop(message[1], None)
        if entry is None:
            return
        future, offsets = entry
        for offset in offsets:
            self._requests.free(offset)
        if future.cancelled():
            if message[0] == "ok":
                self._free_replies([ref.offset for ref in message[2]])
            return
        future.set_result(message)

    def _free_replies(self, offsets: list[int]) -> None:
        """Return reply memory to the owner, one message per event-loop turn."""
        if not self._frees:
            asyncio.get_running_loop().call_soon(self._flush_frees)
        self._frees.extend(offsets)

    def _flush_frees(self) -> None:
        frees, self._frees = self._frees, []
        self._channel.send(("free", frees))

    async def _call(self, kind: str, *args: Any) -> tuple[Any, ...]:
        rid = next(self._ids)
        future: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (future, [])
        self._channel.send((kind, rid, *args))
        try:
            return await future
        finally:
            self._pending.pop(rid, None)

    async def reload(self, config: model_server_config_pb2.ModelServerConfig, *, request: bool = False) -> None:
        reply = await self._call("reload", config.SerializeToString())
        if reply[0] == "err":
            raise ServingError(Code(reply[2]), reply[3])

    async def repository(self, action: str, name: str) -> tuple[Any, ...]:
        """A V2 repository call (`load`, `unload`, `models`) done by the owner's ConfigWatcher."""
        reply = await self._call("repository", action, name)
        if reply[0] == "err":
            raise ServingError(Code(reply[2]), reply[3])
        return reply

    async def scrape(self) -> bytes:
        """The Prometheus page aggregated over the owner and every frontend."""
        reply = await self._call("scrape")
        text: bytes = reply[2]
        return text


class RemoteRepository:
    """The V2 repository extension of a frontend worker: the model owner's ConfigWatcher does the work."""

    def __init__(self, backend: RemoteBackend) -> None:
        self._backend = backend

    async def _do(self, action: str, name: str = "") -> tuple[Any, ...]:
        return await self._backend.repository(action, name)

    async def load_model(self, name: str) -> None:
        await self._do("load", name)

    async def unload_model(self, name: str) -> None:
        await self._do("unload", name)

    async def repository_models(self) -> tuple[tuple[str, ...], frozenset[str]]:
        reply = await self._do("models")
        return tuple(reply[2]), frozenset(reply[3])


class WorkerReadiness(Readiness):
    """Ready when this worker is not draining and the owner says it and every frontend are ready."""

    def __init__(self, mirror: Mirror) -> None:
        super().__init__(mirror.monitor, lambda: mirror.configured)
        self._mirror = mirror

    def ready(self) -> bool:
        return super().ready() and self._mirror.owner_ready and not self._mirror.draining


class WorkerRestApi(RestApi):
    """The REST API with the probes and the Prometheus page answered for the whole server."""

    def __init__(self, backend: RemoteBackend, mirror: Mirror, *args: Any) -> None:
        super().__init__(*args)
        self._backend = backend
        self._mirror = mirror

    async def dispatch(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.url.path.encode()
        path = raw.decode("latin-1").split("?", 1)[0]
        if path == "/readyz":
            readiness = self._readiness
            draining = readiness.draining or self._mirror.draining
            not_ready = readiness.models_not_ready()
            if not not_ready and not draining and self._mirror.owner_ready:
                return json_response(b'{"status": "ready"}\n')
            body = {"status": "not ready", "draining": draining, "models_not_ready": not_ready,
                    "workers_ready": self._mirror.owner_ready}
            return json_response(json.dumps(body).encode() + b"\n", 503)
        metrics_path = self._options.metrics_path
        if metrics_path is not None and path == metrics_path and not request.url.query:
            return Response(await self._backend.scrape(), media_type="text/plain")
        return await super().dispatch(request)


async def serve_frontend(channel: Channel, requests_fd: int, replies_fd: int, index: int) -> int:
    hello = await channel.receive()
    if hello is None or hello[0] != "hello":
        return 1
    _, options, grpc_listen, rest_listen, unix_fd = hello
    options = cast(opts.Options, options)
    configure_logging(options.log_format, options.log_level, worker=f"frontend-{index}")
    mirror = Mirror()
    metrics = Metrics()
    backend = RemoteBackend(channel, Arena(requests_fd), Arena(replies_fd))
    requests = RequestLog(
        metrics, options.request_log_sample_rate, lambda name: name in mirror.serving_map.current.models
    )
    core = Core(
        serving_map=mirror.serving_map,
        monitor=mirror.monitor,
        batcher=cast(Batcher, backend),
        tensor_content=options.enable_serialization_as_tensor_content,
        signature_method_name_check=options.enable_signature_method_name_check,
        reloader=backend,
        metrics=metrics,
    )
    readiness = WorkerReadiness(mirror)
    first_snapshot = anyio.Event()
    drain = anyio.Event()

    async def read_owner(tg: TaskGroup) -> None:
        while (message := await channel.receive()) is not None:
            match message[0]:
                case "snapshot":
                    for proxy in mirror.apply(message):
                        tg.start_soon(give_back, proxy)
                    if mirror.draining:
                        readiness.start_draining()
                    first_snapshot.set()
                case "scrape_part":
                    channel.send(("part", message[1], metrics.render()))
                case "drain":
                    drain.set()
                case _:
                    backend.answer(message)
        log.error("model_owner_lost", message="the model owner process ended; this worker exits")
        os._exit(1)

    async def give_back(proxy: RemoteServable) -> None:
        await mirror.serving_map.leases.wait_released(ServableId(proxy.name, proxy.version))
        channel.send(("released", proxy.token))

    async with anyio.create_task_group() as tg:
        tg.start_soon(read_owner, tg)
        await first_snapshot.wait()
        tg.start_soon(readiness.run)
        await _serve(tg, options, core, requests, readiness, backend, mirror, grpc_listen, rest_listen, unix_fd,
                     channel, drain)
        tg.cancel_scope.cancel()
    channel.send(("drained",))
    await channel.flush()
    return 0


async def _serve(
    tg: TaskGroup, options: opts.Options, core: Core, requests: RequestLog, readiness: WorkerReadiness,
    backend: RemoteBackend, mirror: Mirror, grpc_listen: Listen, rest_listen: Listen, unix_fd: int | None,
    channel: Channel, drain: anyio.Event,
) -> None:
    from svc.server import _drain, _serve_rest  # the same hypercorn setup and drain as one process

    envelope = Envelope(requests)
    repository = RemoteRepository(backend)  # V2's repository calls go to the owner
    handlers = grpc_services(
        core, envelope, readiness, health=options.enable_grpc_healthcheck_service, repository=repository,
        read_timeout=options.request_read_timeout_seconds,
    )
    channel_args = channel_settings(opts.grpc_channel_arguments(options))
    codec = RequestLimitCodec(options.max_request_bytes, channel_args)
    ssl_context = tls.server_context(opts.ssl_config(options))
    servers: list[GrpcServer] = []
    if grpc_listen is not None:
        sock = listening_socket("0.0.0.0", grpc_listen)
        servers.append(ChannelServer(handlers, codec=codec, settings=channel_args,
                                     read_timeout=options.request_read_timeout_seconds))
        await servers[-1].start(sock=sock, ssl=ssl_context)
    if unix_fd is not None:
        servers.append(ChannelServer(handlers, codec=codec, settings=channel_args,
                                     read_timeout=options.request_read_timeout_seconds))
        await servers[-1].start(sock=socket.socket(fileno=unix_fd))
    stop_rest, rest_done = anyio.Event(), anyio.Event()
    rest: RestApi | None = None
    if rest_listen is not None:
        monitoring = opts.monitoring_config(options)
        metrics_path = None
        if monitoring.prometheus_config.enable:
            metrics_path = monitoring.prometheus_config.path or opts.PROMETHEUS_PATH
        rest_options = RestOptions(
            cors=options.rest_api_enable_cors_support, timeout_ms=options.rest_api_timeout_in_ms,
            max_request_bytes=options.max_request_bytes, metrics_path=metrics_path,
            read_timeout_seconds=options.request_read_timeout_seconds,
        )
        assert core.metrics is not None
        rest = WorkerRestApi(backend, mirror, core, envelope, readiness, core.metrics, rest_options)
        rest.v2 = V2Routes(rest, readiness, repository)
        rest_sock = listening_socket("::", rest_listen)
        tg.start_soon(_serve_rest, rest, rest_sock, options, ssl_context, stop_rest, rest_done)
    else:
        rest_done.set()
    channel.send(("listening",))
    await drain.wait()
    await _drain(replace(options, drain_delay_seconds=0.0), readiness, envelope, servers, stop_rest, rest_done)


async def main(control_fd: int, requests_fd: int, replies_fd: int, index: int) -> int:
    # The owner orchestrates shutdown (SIGTERM goes to it; a terminal's Ctrl-C reaches the whole group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel = await Channel.open(socket.socket(fileno=control_fd))
    return await serve_frontend(channel, requests_fd, replies_fd, index)
