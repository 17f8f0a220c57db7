"""Supervisor: starts the actors in dependency order, opens the ports once the initial models are
AVAILABLE (as TF Serving does), and stops everything on SIGTERM/SIGINT or when `shutdown_trigger` returns.

Mirrors `model_servers/server.cc` (`Server::BuildAndStart`): build the core, wait for the initial load, then
listen. A per-item failure is data (a LoadFailed, an error reply); an exception escaping an actor is a bug
and ends the process non-zero for the orchestrator to restart.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
from anyio.abc import ObjectSendStream, TaskGroup
from grpclib.server import Server as GrpcServer
from prometheus_client.core import Metric

from svc import config_files
from svc import options as opts
from svc.batching.scheduler import Batcher, batching_policy
from svc.errors import Code, ServingError
from svc.event_loop import backend_options
from svc.frontends import read_timeouts, tls
from svc.frontends.envelope import Envelope
from svc.frontends.grpc import RequestLimitCodec
from svc.frontends.grpc import services as grpc_services
from svc.frontends.grpc_server import ChannelServer, channel_settings, log_ignored
from svc.frontends.request_log import RequestLog
from svc.frontends.rest import RestApi, RestOptions
from svc.frontends.rest_v2 import V2Routes
from svc.inference.core import Core
from svc.inference.warmup import warm_up
from svc.lifecycle.config_watcher import ConfigWatcher, model_names
from svc.lifecycle.loader_pool import LoaderPool, RetryPolicy
from svc.lifecycle.messages import LoaderInbox, ManagerInbox, ModelConfigs, ModelRemoved, ServableStateChanged
from svc.lifecycle.policy import Transition
from svc.lifecycle.readiness import Readiness
from svc.lifecycle.serving_map import ServingMapHolder
from svc.lifecycle.state_monitor import ModelsSettled, StateMonitor
from svc.lifecycle.states import State
from svc.lifecycle.version_manager import VersionManager
from svc.logging import configure_logging, get_logger, line_buffered_stdout
from svc.metrics import Metrics, gauge
from svc.servables import tf_registry
from svc.servables.custom_ops import load_custom_ops
from svc.servables.loader import SavedModelLoader
from svc.servables.saved_model import Servable, observe_runs, session_config
from svc.sources.storage_poller import StoragePoller
from svc.sources.version_cache import VersionCache
from svc.workers.owner import PublishedServingMap, serve_workers

log = get_logger(actor="supervisor")


MONITOR_BUFFER = 64  # state changes the StateMonitor may lag behind the manager


class StartupError(Exception):
    """The initial models could not be served: TF Serving's `Failed to start server` case."""


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening socket; `::` is dual-stack where the kernel allows it, else IPv4 only.

    Made with an explicit IPPROTO_TCP: asyncio (and grpclib) switch TCP_NODELAY on only for sockets whose
    `proto` says TCP, and without it every small gRPC reply waits ~40 ms for the peer's delayed ACK.
    """
    if host in ("::", ""):
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _reuse_port(sock)
            sock.bind(("::", port))
            sock.listen(1024)
            sock.setblocking(False)
            return sock
        except OSError:
            host = "0.0.0.0"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _reuse_port(sock)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@dataclass(frozen=True, slots=True)
class Listeners:
    """Listening sockets bound by the caller (tests bind 127.0.0.1:0 first): used instead of binding `--port` /
    `--rest_api_port`, which still decide whether the listener runs and name it in the log."""

    grpc: socket.socket | None = None
    rest: socket.socket | None = None


def _reuse_port(sock: socket.socket) -> None:
    """SO_REUSEPORT, as gRPC sets it on TF Serving's listener: a second server on the same port starts and
    the kernel spreads new connections over both (issue 10)."""
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def _inference_threads(options: opts.Options) -> int:
    """Inference threads without --enable_batching (TF Serving runs those calls on its gRPC threads)."""
    return 4 * (os.cpu_count() or 1)


async def serve(
    options: opts.Options,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    sockets: Listeners | None = None,
) -> int:
    """Run the server until SIGTERM/SIGINT, or, when `shutdown_trigger` is given (hypercorn's pattern: no
    signal handlers then), until the awaitable it returns completes; then drain and stop. `sockets` are
    listening sockets to serve on instead of binding the ports (with --frontend_workers > 1 every worker
    accepts from them, instead of binding the ports with SO_REUSEPORT)."""
    await _load_custom_ops(options)  # before any model, and before the freeze below covers their objects
    # TensorFlow's ~300k module-level objects never die: move them out of the collector's way, so the
    # collection after each unload (which frees the old graph's cycles) takes a millisecond, not 300.
    gc.freeze()
    config = opts.model_server_config(options)
    config_files.validate_model_server_config(config)
    names = tuple(m.name for m in config.model_config_list.config)

    # Checked before any stream exists (a stream nobody closes warns when collected).
    policy = batching_policy(opts.batching_parameters(options), _inference_threads(options))
    # Unbounded only for the manager <-> loader cycle (the poller's AspiredVersions share the manager's inbox);
    # a full monitor stream makes the manager wait, a full config stream the watcher.
    manager_send, manager_recv = anyio.create_memory_object_stream[ManagerInbox](math.inf)
    loader_send, loader_recv = anyio.create_memory_object_stream[LoaderInbox](math.inf)
    monitor_send, monitor_recv = anyio.create_memory_object_stream[ServableStateChanged](MONITOR_BUFFER)
    configs_send, configs_recv = anyio.create_memory_object_stream[ModelConfigs](4)
    shutdown_send = manager_send.clone()  # the server's own door into the manager, for the final unload

    metrics = Metrics()
    observe_runs(metrics.graph_run)
    serving_map: ServingMapHolder[Servable] = (
        PublishedServingMap() if options.frontend_workers > 1 else ServingMapHolder[Servable]()
    )
    monitor = StateMonitor(monitor_recv)
    manager = VersionManager(
        manager_recv, loader_send, monitor_send, serving_map, Transition(options.aspired_version_policy)
    )
    tags = [t.strip() for t in options.saved_model_tags.split(",") if t.strip()]
    sess_config = session_config(
        options.tensorflow_intra_op_parallelism,
        options.tensorflow_inter_op_parallelism,
        options.tensorflow_session_parallelism,
        config_files.read_text_file(Path(options.tensorflow_session_config_file))
        if options.tensorflow_session_config_file else "",
        options.per_process_gpu_memory_fraction,
    )

    cache = VersionCache.from_environ()  # remote versions (s3://, ...) are loaded from a local copy
    loader = SavedModelLoader(
        tags,
        sess_config,
        cache,
        metrics,
        warm_up=partial(
            warm_up,
            iterations=options.num_request_iterations_for_warmup,
            method_name_check=options.enable_signature_method_name_check,
        )
        if options.enable_model_warmup
        else None,
        version_batching=partial(_version_batching, options) if (
            options.enable_batching and options.enable_per_model_batching_parameters
        ) else None,
    )

    pool = LoaderPool(
        loader_recv,
        manager_send.clone(),
        loader,
        manager.is_aspired,
        serving_map.leases,
        num_load_threads=options.num_load_threads,
        num_unload_threads=options.num_unload_threads,
        retry=RetryPolicy(options.max_num_load_retries, options.load_retry_interval_micros / 1e6),
        on_unload_duration=lambda id, seconds: metrics.unload(id.name, id.version, seconds),
    )
    pool.set_load_threads(options.num_initial_load_threads)
    poller = StoragePoller(
        configs_recv, manager_send, options.file_system_poll_wait_seconds, ready_marker=options.version_ready_marker
    )
    read_file = None
    if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
        def read_file() -> config_files.ModelServerConfig:
            return opts.model_server_config(options)
    watcher = ConfigWatcher(
        configs_send,
        config,
        monitor,
        read_file=read_file,
        poll_wait_seconds=options.model_config_file_poll_wait_seconds,
        allow_labels_for_unavailable=options.allow_version_labels_for_unavailable_models,
        serving_map=serving_map,
    )
    core = Core(
        serving_map=serving_map,
        monitor=monitor,
        batcher=Batcher(policy, metrics.batch),
        tensor_content=options.enable_serialization_as_tensor_content,
        signature_method_name_check=options.enable_signature_method_name_check,
        reloader=watcher,
        metrics=metrics,
    )
    readiness = Readiness(monitor, watcher.served_names)  # explicitly unloaded models (V2) are not waited for
    metrics.add_gauges(lambda: _state_gauges(monitor, poller, pool, core.batcher))

    async with anyio.create_task_group() as tg, shutdown_send:
        for actor in (monitor.run, manager.run, pool.run):  # consumers first: dependency order
            tg.start_soon(actor)
        tg.start_soon(_attach_tf_registry, metrics)
        sources = anyio.CancelScope()
        tg.start_soon(_run_sources, sources, poller, watcher)
        initial = ModelsSettled(names)
        await monitor.wait_until(initial.done)
        failures = initial.failures(monitor.snapshot())
        if failures:
            message = f"{len(failures)} servable(s) did not become available: {{{''.join(failures)}}}"
            raise StartupError(ServingError(Code.UNKNOWN, message).status_text())
        try:
            watcher.check_startup_labels()
        except ServingError as exc:
            raise StartupError(exc.status_text()) from exc
        pool.set_load_threads(options.num_load_threads)
        tg.start_soon(readiness.run)
        if isinstance(serving_map, PublishedServingMap):  # --frontend_workers > 1: the ports are theirs
            log_ignored(channel_settings(opts.grpc_channel_arguments(options)))  # once, not once per worker
            await serve_workers(tg, options, core, watcher, readiness, serving_map, shutdown_trigger,
                                sockets.grpc if sockets else None, sockets.rest if sockets else None)
        else:
            def is_known_model(name: str) -> bool:
                return name in serving_map.current.models or name in model_names(watcher.current)

            requests = RequestLog(metrics, options.request_log_sample_rate, is_known_model)
            await _run_frontends(
                tg, options, core, readiness, requests, watcher, shutdown_trigger, sockets or Listeners(),
            )
        sources.cancel()  # no new aspired versions: what is loaded now is all there is to unload
        with anyio.move_on_after(options.shutdown_grace_seconds) as unloading:
            await _unload_all(manager, shutdown_send, monitor)
        if unloading.cancelled_caught:
            log.warning("unload_timed_out", grace_seconds=options.shutdown_grace_seconds)
        tg.cancel_scope.cancel()
    cache.close()  # the copies of remote versions (also at exit, for a start that failed)
    log.info("server_stopped")
    return 0


async def _load_custom_ops(options: opts.Options) -> None:
    """`--custom_op_modules` and `--custom_op_libraries` (in a thread: imports take seconds); a failure ends
    start-up with `Failed to start server. Error: ...`."""
    modules = opts.comma_list(options.custom_op_modules)
    libraries = opts.comma_list(options.custom_op_libraries)
    if not modules and not libraries:
        return
    started = time.perf_counter()
    ops = await anyio.to_thread.run_sync(load_custom_ops, modules, libraries)
    log.info("custom_ops_loaded", modules=list(modules), libraries=list(libraries), ops=list(ops),
             seconds=round(time.perf_counter() - started, 3))


def _version_batching(options: opts.Options, local: str) -> object:
    """--enable_per_model_batching_parameters: the version's batching_params.pbtxt, and without one the
    model is not batched (TF Serving)."""
    return batching_policy(opts.per_model_batching_parameters(options, local), _inference_threads(options))


def _state_gauges(monitor: StateMonitor, poller: StoragePoller, pool: LoaderPool[Servable], batcher: Batcher) -> list[Metric]:
    """Series read at scrape time (on the event loop, like every actor's state)."""
    counts: dict[tuple[str, str], int] = {}
    for name, versions in monitor.snapshot().items():
        for status in versions.values():
            key = (name, status.state.name)
            counts[key] = counts.get(key, 0) + 1
    stats = batcher.statistics()
    depth: dict[tuple[str, str], int] = {}
    for queue in stats.queues:
        key = (queue.model, str(queue.version))
        depth[key] = depth.get(key, 0) + queue.queued_tasks
    return [
        gauge("aspired_queue_depth", "Tasks waiting in a version's batch queues.", ["model", "version"],
              sorted(depth.items())),
        gauge("aspired_batch_tasks_dropped", "Tasks refused (queue full), expired or cancelled before running.",
              ["reason"], [(("rejected",), stats.rejected), (("expired",), stats.expired),
                           (("cancelled",), stats.cancelled)]),
        gauge("aspired_versions", "Versions the server has seen, by model and state.", ["model", "state"],
              [(k, v) for k, v in sorted(counts.items())]),
        gauge("aspired_storage_poll_errors", "Storage polls that failed or listed suddenly empty.", [],
              [((), poller.poll_errors)]),
        gauge("aspired_loads_in_progress", "Versions loading now.", [], [((), pool.loads_in_progress)]),
    ]


async def _run_sources(scope: anyio.CancelScope, poller: StoragePoller, watcher: ConfigWatcher) -> None:
    """The config watcher and the storage poller, in a scope of their own: shutdown stops them first."""
    with scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(poller.run)
            tg.start_soon(watcher.run)


async def _unload_all(
    manager: VersionManager[Servable], inbox: ObjectSendStream[ManagerInbox], monitor: StateMonitor
) -> None:
    """Shutdown through the lifecycle: every model is removed, so every version unloads the usual way (the
    loader pool, off the event loop, once no request holds it); waits until every version has ENDed."""
    for name in manager.models():
        await inbox.send(ModelRemoved(name))
    await monitor.wait_until(
        lambda table: all(s.state is State.END for versions in table.values() for s in versions.values())
    )


async def _run_frontends(
    tg: TaskGroup,
    options: opts.Options,
    core: Core,
    readiness: Readiness,
    requests: RequestLog,
    watcher: ConfigWatcher,
    shutdown_trigger: Callable[[], Awaitable[object]] | None,
    sockets: Listeners,
) -> None:
    """Open the ports, log TF Serving's lines, serve until SIGTERM/SIGINT (or the trigger), then drain."""
    envelope = Envelope(requests)
    handlers = grpc_services(
        core, envelope, readiness, health=options.enable_grpc_healthcheck_service, repository=watcher,
        read_timeout=options.request_read_timeout_seconds,
    )
    channel = channel_settings(opts.grpc_channel_arguments(options))
    log_ignored(channel)
    codec = RequestLimitCodec(options.max_request_bytes, channel)
    read_timeout = options.request_read_timeout_seconds
    grpc_servers: list[GrpcServer] = []  # grpclib serves one listener per Server: TCP and the UNIX socket
    ssl_context = tls.server_context(opts.ssl_config(options))  # one context, both ports, nothing on disk
    if options.port:
        try:
            grpc_sock = sockets.grpc or bind_tcp("0.0.0.0", options.port)
        except OSError as exc:
            raise StartupError(f"UNAVAILABLE: Could not bind gRPC port {options.port}: {exc.strerror}") from exc
        grpc_servers.append(ChannelServer(handlers, codec=codec, settings=channel, read_timeout=read_timeout))
        await grpc_servers[-1].start(sock=grpc_sock, ssl=ssl_context)
        log.info("grpc_server_started", port=options.port, tls=ssl_context is not None,
                 message=f"Running gRPC ModelServer at 0.0.0.0:{options.port} ...")
    if options.grpc_socket_path:
        grpc_servers.append(ChannelServer(handlers, codec=codec, settings=channel, read_timeout=read_timeout))
        await grpc_servers[-1].start(path=options.grpc_socket_path)
        log.info("grpc_server_started", socket=options.grpc_socket_path,
                 message=f"Running gRPC ModelServer at UNIX socket {options.grpc_socket_path} ...")
    stop_rest = anyio.Event()
    rest: RestApi | None = None
    rest_done = anyio.Event()
    if options.rest_api_port and options.rest_api_port == options.port:
        log.error("rest_server_not_started", message="--rest_api_port must differ from --port")
        rest_done.set()
    elif options.rest_api_port:
        rest = _rest_api(options, core, envelope, readiness)
        rest.v2 = V2Routes(rest, readiness, watcher)
        try:
            rest_sock = sockets.rest or bind_tcp("::", options.rest_api_port)
        except OSError as exc:
            raise StartupError(
                f"UNAVAILABLE: Could not bind REST port {options.rest_api_port}: {exc.strerror}"
            ) from exc
        tg.start_soon(_serve_rest, rest, rest_sock, options, ssl_context, stop_rest, rest_done)
        log.info("rest_server_started", port=options.rest_api_port,
                 message=f"Exporting HTTP/REST API at:localhost:{options.rest_api_port} ...")
    else:
        rest_done.set()

    if shutdown_trigger is not None:
        await shutdown_trigger()
        log.info("shutdown_requested", trigger="shutdown_trigger")
        await _drain(options, readiness, envelope, grpc_servers, stop_rest, rest_done)
        return
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("shutdown_requested", signal=signal.Signals(signum).name)
            break
        tg.start_soon(_exit_on_second_signal, signals)
        await _drain(options, readiness, envelope, grpc_servers, stop_rest, rest_done)


async def _exit_on_second_signal(signals: AsyncIterator[int]) -> None:
    async for signum in signals:
        log.warning("shutdown_forced", signal=signal.Signals(signum).name)
        os._exit(1)


async def _drain(
    options: opts.Options,
    readiness: Readiness,
    envelope: Envelope,
    grpc_servers: list[GrpcServer],
    stop_rest: anyio.Event,
    rest_done: anyio.Event,
) -> None:
    """Readiness fails at once; after `--drain_delay_seconds` stop accepting, finish what is in flight
    (within `--shutdown_grace_seconds`), then close."""
    readiness.start_draining()
    log.info("drain_started", delay_seconds=options.drain_delay_seconds)
    with anyio.move_on_after(options.shutdown_grace_seconds) as scope:
        await anyio.sleep(options.drain_delay_seconds)
        # Stop listening; calls already on open connections are refused from here on, in-flight ones finish.
        for server in grpc_servers:
            if server._server is not None:
                server._server.close()
        envelope.stop_accepting()
        stop_rest.set()
        await envelope.wait_idle()
        await rest_done.wait()
    if scope.cancelled_caught:
        log.warning("drain_timed_out", grace_seconds=options.shutdown_grace_seconds)
    for server in grpc_servers:
        server.close()
    with anyio.move_on_after(2):
        for server in grpc_servers:
            await server.wait_closed()
    log.info("drain_finished")


def _rest_api(options: opts.Options, core: Core, envelope: Envelope, readiness: Readiness) -> RestApi:
    monitoring = opts.monitoring_config(options)
    metrics_path = None
    if monitoring.prometheus_config.enable:
        metrics_path = monitoring.prometheus_config.path or "/monitoring/prometheus/metrics"
    assert core.metrics is not None
    rest_options = RestOptions(
        cors=options.rest_api_enable_cors_support,
        timeout_ms=options.rest_api_timeout_in_ms,
        max_request_bytes=options.max_request_bytes,
        metrics_path=metrics_path,
        read_timeout_seconds=options.request_read_timeout_seconds,
    )
    return RestApi(core, envelope, readiness, core.metrics, rest_options)


async def _serve_rest(
    rest: RestApi,
    sock: socket.socket,
    options: opts.Options,
    ssl_context: ssl.SSLContext | None,
    stop: anyio.Event,
    done: anyio.Event,
) -> None:
    """hypercorn on an already listening socket, so the port accepts before the log line says so."""
    from hypercorn.asyncio import serve as hypercorn_serve

    config = tls.hypercorn_config(ssl_context)
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.graceful_timeout = options.shutdown_grace_seconds
    config.h11_max_incomplete_size = 64 * 1024
    # Longer than the usual load-balancer idle timeout (60 s), so the balancer closes idle connections first
    # and never reuses one the server is closing.
    config.keep_alive_timeout = 75.0
    # ... but a request head that has started must be complete within the read timeout (issue 10).
    read_timeouts.bound_request_heads(config, options.request_read_timeout_seconds)
    try:
        await hypercorn_serve(rest.app(), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    finally:
        sock.detach()  # hypercorn owns (and has closed) the descriptor it was handed
        done.set()


async def _attach_tf_registry(metrics: Metrics) -> None:
    """TensorFlow's metric registry on the Prometheus page, once its reader is built (a few seconds of a
    compiler at the first start with a TensorFlow version, in a thread)."""
    registry = await anyio.to_thread.run_sync(tf_registry.shared, abandon_on_cancel=True)
    if registry is not None:
        metrics.attach_tf_registry(registry.collect)


def run(options: opts.Options, *, sockets: Listeners | None = None) -> int:
    """Entry point from the CLI: returns the process exit code. SIGTERM/SIGINT stop the server."""
    workers = options.frontend_workers > 1
    if workers:
        line_buffered_stdout()  # the frontend workers write to the same stdout
    configure_logging(options.log_format, options.log_level, worker="owner" if workers else None)
    for flag in opts.ignored_flags(options):
        log.info("flag_ignored", flag=flag, reason=opts.IGNORED_FLAGS[flag],
                 message=f"--{flag} has no effect in this server")
    try:
        return anyio.run(
            functools.partial(serve, options, sockets=sockets), backend="asyncio", backend_options=backend_options()
        )
    except (StartupError, ServingError, BaseExceptionGroup) as exc:
        error = startup_error(exc)
        if error is None:
            raise
        print(f"Failed to start server. Error: {error}", flush=True)  # noqa: T201 (TF Serving prints this)
        return 255


def startup_error(exc: BaseException) -> str | None:
    """The text of a start-up failure, looking through the task group's exception groups."""
    if isinstance(exc, StartupError):
        return str(exc)
    if isinstance(exc, ServingError):
        return exc.status_text()
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return startup_error(exc.exceptions[0])
    return None


__all__: Sequence[str] = ("Listeners", "run", "serve", "startup_error")
