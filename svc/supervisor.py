"""Supervisor: starts the actors in dependency order, opens the ports once the initial models are
AVAILABLE (as TF Serving does), and stops everything on SIGTERM/SIGINT.

Mirrors `model_servers/server.cc` (`Server::BuildAndStart`): build the core, wait for the initial load, then
listen. A per-item failure is data (a LoadFailed, an error reply); an exception escaping an actor is a bug
and ends the process non-zero for the orchestrator to restart.
"""

from __future__ import annotations

import math
import os
import signal
import socket
from collections.abc import Sequence

import anyio
from anyio.abc import TaskGroup

from svc import api
from svc import options as opts
from svc.batcher import Batcher
from svc.config_watcher import ConfigWatcher
from svc.errors import Code, ServingError
from svc.loader_pool import LoaderPool, RetryPolicy
from svc.logging import configure_logging, get_logger
from svc.manager import VersionManager
from svc.messages import LoaderInbox, ManagerInbox, ModelConfigs, ServableId, ServableStateChanged
from svc.monitor import ModelsSettled, StateMonitor
from svc.poller import StoragePoller
from svc.servable import Servable, load, session_config
from svc.serving_map import ServingMapHolder

log = get_logger(actor="supervisor")


class StartupError(Exception):
    """The initial models could not be served: TF Serving's `Failed to start server` case."""


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening socket; `::` is dual-stack where the kernel allows it, else IPv4 only."""
    if host in ("::", ""):
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::", port))
            sock.listen(1024)
            sock.setblocking(False)
            return sock
        except OSError:
            host = "0.0.0.0"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _inference_threads(options: opts.Options) -> int:
    batching = opts.batching_parameters(options)
    if batching is not None and batching.HasField("num_batch_threads"):
        return max(int(batching.num_batch_threads.value), 1)
    return 4 * (os.cpu_count() or 1)


async def serve(options: opts.Options) -> int:
    config = opts.model_server_config(options)
    opts.validate_model_server_config(config)
    names = tuple(m.name for m in config.model_config_list.config)

    manager_send, manager_recv = anyio.create_memory_object_stream[ManagerInbox](math.inf)
    loader_send, loader_recv = anyio.create_memory_object_stream[LoaderInbox](math.inf)
    monitor_send, monitor_recv = anyio.create_memory_object_stream[ServableStateChanged](math.inf)
    configs_send, configs_recv = anyio.create_memory_object_stream[ModelConfigs](4)

    serving_map = ServingMapHolder()
    monitor = StateMonitor(monitor_recv)
    manager = VersionManager(manager_recv, loader_send, monitor_send, serving_map, options.aspired_version_policy)
    tags = [t.strip() for t in options.saved_model_tags.split(",") if t.strip()]
    sess_config = session_config(
        options.tensorflow_intra_op_parallelism,
        options.tensorflow_inter_op_parallelism,
        options.tensorflow_session_parallelism,
    )

    def loader(id: ServableId, path: str) -> Servable:
        return load(id.name, id.version, path, tags, sess_config)

    pool = LoaderPool(
        loader_recv,
        manager_send.clone(),
        loader,
        manager.is_aspired,
        num_load_threads=options.num_load_threads,
        num_unload_threads=options.num_unload_threads,
        retry=RetryPolicy(options.max_num_load_retries, options.load_retry_interval_micros / 1e6),
    )
    pool.set_load_threads(options.num_initial_load_threads)
    poller = StoragePoller(configs_recv, manager_send, options.file_system_poll_wait_seconds)
    read_file = None
    if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
        def read_file() -> opts.ModelServerConfig:
            return opts.model_server_config(options)
    watcher = ConfigWatcher(
        configs_send,
        config,
        monitor,
        read_file=read_file,
        poll_wait_seconds=options.model_config_file_poll_wait_seconds,
        allow_labels_for_unavailable=options.allow_version_labels_for_unavailable_models,
    )
    core = api.Core(
        serving_map=serving_map,
        monitor=monitor,
        batcher=Batcher(_inference_threads(options)),
        tensor_content=options.enable_serialization_as_tensor_content,
        reloader=watcher,
    )

    async with anyio.create_task_group() as tg:
        for actor in (monitor.run, manager.run, pool.run, poller.run, watcher.run):
            tg.start_soon(actor)
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
        await _run_frontends(tg, options, core)
        tg.cancel_scope.cancel()
    return 0


async def _run_frontends(tg: TaskGroup, options: opts.Options, core: api.Core) -> None:
    """Open the ports, log TF Serving's lines, and serve until SIGTERM/SIGINT."""
    from grpclib.server import Server as GrpcServer
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config as HypercornConfig

    from svc.grpc_frontend import ModelService, PredictionService

    stop = anyio.Event()
    grpc_server = GrpcServer([PredictionService(core), ModelService(core)])
    if options.port:
        try:
            grpc_sock = bind_tcp("0.0.0.0", options.port)
        except OSError as exc:
            raise StartupError(f"UNAVAILABLE: Could not bind gRPC port {options.port}: {exc.strerror}") from exc
        await grpc_server.start(sock=grpc_sock)
        log.info("grpc_server_started", port=options.port,
                 message=f"Running gRPC ModelServer at 0.0.0.0:{options.port} ...")
    if options.grpc_socket_path:
        await grpc_server.start(path=options.grpc_socket_path)
        log.info("grpc_server_started", socket=options.grpc_socket_path,
                 message=f"Running gRPC ModelServer at UNIX socket {options.grpc_socket_path} ...")
    rest_sock: socket.socket | None = None
    if options.rest_api_port and options.rest_api_port == options.port:
        log.error("rest_server_not_started", message="--rest_api_port must differ from --port")
    elif options.rest_api_port:
        from svc.http_frontend import RestApi

        try:
            rest_sock = bind_tcp("::", options.rest_api_port)
        except OSError as exc:
            raise StartupError(
                f"UNAVAILABLE: Could not bind REST port {options.rest_api_port}: {exc.strerror}"
            ) from exc
        hconfig = HypercornConfig()
        hconfig.bind = [f"fd://{rest_sock.fileno()}"]
        hconfig.accesslog = None
        hconfig.graceful_timeout = 5.0
        app = RestApi(core).app()
        tg.start_soon(lambda: hypercorn_serve(app, hconfig, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        log.info("rest_server_started", port=options.rest_api_port,
                 message=f"Exporting HTTP/REST API at:localhost:{options.rest_api_port} ...")

    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("shutdown_requested", signal=signal.Signals(signum).name)
            break
    stop.set()
    grpc_server.close()
    with anyio.move_on_after(5):
        await grpc_server.wait_closed()


def run(options: opts.Options) -> int:
    """Entry point from the CLI: returns the process exit code."""
    configure_logging(options.log_format, options.log_level)
    for flag in opts.ignored_flags(options):
        log.info("flag_ignored", flag=flag, message=f"--{flag} has no effect in this server")
    try:
        return anyio.run(serve, options, backend="asyncio")
    except (StartupError, ServingError, BaseExceptionGroup) as exc:
        error = _startup_error(exc)
        if error is None:
            raise
        print(f"Failed to start server. Error: {error}", flush=True)  # noqa: T201 (TF Serving prints this)
        return 255


def _startup_error(exc: BaseException) -> str | None:
    """The text of a start-up failure, looking through the task group's exception groups."""
    if isinstance(exc, StartupError):
        return str(exc)
    if isinstance(exc, ServingError):
        return exc.status_text()
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _startup_error(exc.exceptions[0])
    return None


__all__: Sequence[str] = ("run", "serve")
