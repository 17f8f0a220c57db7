"""Real aspired servers on loopback for e2e tests, on listening sockets bound here first and handed over.

`Server` runs the whole server in this process (`svc.server.serve` on its own event loop in a thread, stopped
through its `shutdown_trigger`): TensorFlow is imported once per test session, so a server starts in well
under a second. Its log lines go to its own sink (`lines`), so a test reads the JSON lines of its server only.
In-process servers log at debug level whatever `--log_level` says (the one structlog configuration of the
process is made in tests/conftest.py), so tests can wait for `storage_polled`.

`ServerProcess` runs the command line in a subprocess (`python -m tests.e2e.launch FLAGS`: `svc.cli.main` on
the inherited sockets): for what only a process has (signals, exit status, stdout, the CLI's environment).

With ASPIRED_E2E_FRONTEND_WORKERS=N (issue 15: the e2e tier once more with frontend worker processes) every
server gets `--frontend_workers=N` and runs as a process (`Server` hands over to a `ServerProcess`): the
workers bind their own SO_REUSEPORT sockets, so there the ports are chosen, released and bound again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

import anyio
import httpx

from svc.cli import parse_command_line
from svc.errors import ServingError
from svc.logging import log_sink
from svc.options import Options, validate_options
from svc.server import Listeners, bind_tcp, serve, startup_error
from tests.e2e.launch import LISTENERS_VARIABLE
from tests.paths import REPO
from tests.waiting import wait_until

Event = dict[str, object]

WORKERS_ENV = "ASPIRED_E2E_FRONTEND_WORKERS"


def workers_flag(args: Sequence[str]) -> list[str]:
    """`--frontend_workers=N` when the environment asks for the worker-process pass and the test did not."""
    workers = os.environ.get(WORKERS_ENV)
    if workers and not any(a.startswith("--frontend_workers") for a in args):
        return [f"--frontend_workers={workers}"]
    return []


def with_workers(args: Sequence[str]) -> bool:
    """Frontend worker processes serve these flags (they bind the ports themselves)."""
    for arg in [*args, *workers_flag(args)][::-1]:  # the last occurrence of a flag wins
        if arg.startswith("--frontend_workers="):
            return arg.partition("=")[2].strip() not in ("0", "1")
    return False


def listening_socket() -> socket.socket:
    """A TCP socket listening on 127.0.0.1 at a port the kernel chose: nobody can take it before the server."""
    return bind_tcp("127.0.0.1", 0)


def free_port() -> int:
    """A port nothing listens on now: for an address that refuses connections, or a flag a server never gets
    to bind. Never a port to start a server on (a race): bind first and hand the socket over."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_of(sock: socket.socket | None) -> int:
    return int(sock.getsockname()[1]) if sock is not None else 0


class ServerBase:
    """A server's ports, its log lines (the JSON ones parsed) and the waits tests make on them."""

    def __init__(self, grpc_port: int, rest_port: int) -> None:
        self.grpc_port = grpc_port
        self.rest_port = rest_port
        self.lines: list[str] = []
        self._events: list[Event] = []
        self._parsed = 0
        self._lock = threading.Lock()

    def _append(self, line: str) -> None:
        self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def log_events(self) -> list[Event]:
        """Every JSON line so far, parsed (in order)."""
        with self._lock:
            end = len(self.lines)
            for line in self.lines[self._parsed : end]:
                if line.startswith("{"):
                    try:
                        self._events.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
            self._parsed = end
            return list(self._events)

    def events(self, name: str, after: int = 0) -> list[Event]:
        """The events called `name`, from the `after`-th JSON line on (see `mark`)."""
        return [e for e in self.log_events()[after:] if e.get("event") == name]

    def mark(self) -> int:
        """A position in the log: `events(name, after=mark)` sees only what was logged later."""
        return len(self.log_events())

    def _check_alive(self) -> None:
        """Raise when the server ended (subclasses): a wait must not outlive its server."""

    def wait_for_line(self, text: str, timeout: float = 60.0) -> str:
        def found() -> str | None:
            for line in list(self.lines):
                if text in line:
                    return line
            self._check_alive()
            return None

        return wait_until(found, timeout, message=lambda: f"no line containing {text!r}:\n{self.output()}")

    def wait_for_event(self, name: str, after: int = 0, timeout: float = 60.0) -> Event:
        """The first `name` event logged after position `after`."""

        def found() -> Event | None:
            events = self.events(name, after)
            if not events:
                self._check_alive()
            return events[0] if events else None

        return wait_until(found, timeout, message=lambda: f"no {name} event:\n{self.output()}")

    def wait_for_polls(self, count: int = 2, timeout: float = 60.0) -> None:
        """Until `count` more storage polls finished. Two mean at least one whole poll began after this call:
        what a test waits for before it checks that a poll did *not* change something."""
        after = self.mark()
        wait_until(lambda: len(self.events("storage_polled", after)) >= count, timeout,
                   message=lambda: f"fewer than {count} polls:\n{self.output()}")

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def version_states(self, model: str) -> dict[int, str]:
        """GetModelStatus over REST: version -> state."""
        r = httpx.get(f"{self.rest_url}/v1/models/{model}", timeout=30)
        if r.status_code != 200:
            return {}
        return {int(s["version"]): s["state"] for s in r.json()["model_version_status"]}

    def wait_for_version_state(self, model: str, version: int, state: str, timeout: float = 60.0) -> None:
        wait_until(lambda: self.version_states(model).get(version) == state, timeout,
                   interval=0.05, message=lambda: f"{model}/{version} never {state}: {self.version_states(model)}")

    def wait_for_states(self, model: str, states: dict[int, str], timeout: float = 60.0) -> None:
        """Until the model's versions are exactly `states`."""
        wait_until(lambda: self.version_states(model) == states, timeout, interval=0.05,
                   message=lambda: f"{model} never {states}: {self.version_states(model)}")


class Server(ServerBase):
    """The server in this process, on sockets bound at construction (`grpc_port`, `rest_port`).

    `start()` returns once both ports serve, as the subprocess's log lines would say; a start-up failure
    raises RuntimeError `server exited with 255` with TF Serving's `Failed to start server. Error: ...` line
    in `output()`, as the command line prints it. `stop()` ends it as SIGTERM would (drain, close models).
    """

    def __init__(self, args: Sequence[str], *, rest: bool = True) -> None:
        self.args = list(args)
        # In a process, debug lines too (`storage_polled`...), as in-process servers log; a test's flag wins.
        self._process = ServerProcess(["--log_level=debug", *args], rest=rest) if with_workers(args) else None
        self._grpc_sock: socket.socket | None = None
        self._rest_sock: socket.socket | None = None
        if self._process is not None:  # see the module's docstring
            super().__init__(self._process.grpc_port, self._process.rest_port)
            self.lines = self._process.lines
        else:
            self._grpc_sock = listening_socket()
            self._rest_sock = listening_socket() if rest else None
            super().__init__(port_of(self._grpc_sock), port_of(self._rest_sock))
        self.returncode: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._serving = threading.Event()
        self._ended = threading.Event()

    def options(self) -> Options:
        """The flags parsed as the command line parses them (the environment gives MODEL_NAME & co.)."""
        ports = [f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}"]
        options, unknown = parse_command_line([*ports, *self.args], os.environ)
        assert not unknown, f"not flags: {unknown}"
        validate_options(options)
        return options

    def start(self, timeout: float = 120.0) -> Self:
        if self._process is not None:
            self._process.start(timeout)
            return self
        try:
            options = self.options()
        except ServingError as exc:
            self._fail(255, f"Failed to start server. Error: {exc.status_text()}")
            raise RuntimeError(f"server exited with 255:\n{self.output()}") from exc
        self._thread = threading.Thread(target=self._run, args=(options,), name=f"aspired-{self.grpc_port}",
                                        daemon=True)
        self._thread.start()
        try:
            wait_until(lambda: self._serving.is_set() or self._ended.is_set(), timeout,
                       message=lambda: f"server not serving:\n{self.output()}")
            self._check_alive()
        except BaseException:
            self.stop()
            raise
        return self

    def _fail(self, code: int, line: str) -> None:
        self._append(line)
        self.returncode = code
        self._ended.set()

    def _check_alive(self) -> None:
        if self._process is not None:
            self._process._check_alive()
        elif self._ended.is_set():
            raise RuntimeError(f"server exited with {self.returncode}:\n{self.output()}")

    def _run(self, options: Options) -> None:
        with log_sink(self._append):
            try:
                self.returncode = anyio.run(self._main, options, backend="asyncio")
            except BaseException as exc:  # noqa: BLE001 (the thread's end: what `run` turns into exit 255, or a bug)
                error = startup_error(exc)
                if error is None:
                    self._append("".join(traceback.format_exception(exc)))
                    self.returncode = 1
                else:
                    self._append(f"Failed to start server. Error: {error}")
                    self.returncode = 255
            finally:
                self._ended.set()

    async def _main(self, options: Options) -> int:
        self._shutdown = anyio.Event()
        with anyio.CancelScope() as self._scope:
            self._loop = asyncio.get_running_loop()
            return await serve(
                options, shutdown_trigger=self._trigger, sockets=Listeners(self._grpc_sock, self._rest_sock)
            )
        return 1  # killed

    async def _trigger(self) -> None:
        assert self._shutdown is not None
        self._serving.set()
        await self._shutdown.wait()

    def _call_soon(self, callback: Callable[[], object]) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the server has ended
                self._loop.call_soon_threadsafe(callback)

    def stop(self, timeout: float = 60.0) -> int:
        """Shut down as on SIGTERM (drain, then close every model); killed if it does not end in time."""
        if self._process is not None:
            self.returncode = self._process.stop(timeout)
            return self.returncode
        if self._thread is not None:
            if self._thread.is_alive() and self._shutdown is not None:
                self._call_soon(self._shutdown.set)
                self._thread.join(timeout)
            if self._thread.is_alive() and self._scope is not None:
                self._call_soon(self._scope.cancel)
                self._thread.join(timeout)
            assert not self._thread.is_alive(), f"in-process server did not stop:\n{self.output()}"
        for sock in (self._grpc_sock, self._rest_sock):
            if sock is not None:
                sock.close()  # a no-op where the server closed or took the socket
        if self._thread is not None:
            self._thread = None
            self._check_nothing_left_open()
        return self.returncode or 0

    def _check_nothing_left_open(self) -> None:
        """Collect the stopped server's garbage now (its cycles are not frozen by the next server's
        `gc.freeze()`), and fail here on a transport, stream or file it left open: in a process of its own
        that would go unseen, here it would warn (an error) in whichever later test the collector ran."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            gc.collect()
        left_open = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        # Connections a client had not closed yet when the server stopped: grpclib's Server.close() stops
        # listening and cancels calls but leaves idle connections to their peers (a process's exit closes
        # them). Collected here, they warn no later test.
        left_open = [m for m in left_open if not m.startswith("unclosed transport <_SelectorSocketTransport")]
        assert not left_open, f"the stopped server left open: {left_open}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerProcess(ServerBase):
    """The command line in a subprocess on sockets bound here (`grpc_port`/`rest_port`); stdout in `lines`."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None, rest: bool = True) -> None:
        self._sockets = [listening_socket()]
        if rest:
            self._sockets.append(listening_socket())
        super().__init__(port_of(self._sockets[0]), port_of(self._sockets[1]) if rest else 0)
        flags = [f"--port={self.grpc_port}"]
        if rest:
            flags.append(f"--rest_api_port={self.rest_port}")
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        if with_workers(args):  # the workers bind the ports themselves (see the module's docstring)
            for sock in self._sockets:
                sock.close()
            self._sockets = []
            self.args = [sys.executable, "-m", "svc", *flags, *workers_flag(args), *args]
        else:
            self.args = [sys.executable, "-m", "tests.e2e.launch", *flags, *args]
            self.env[LISTENERS_VARIABLE] = ",".join(str(s.fileno()) for s in self._sockets)
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 120.0) -> Self:
        self.proc = subprocess.Popen(
            self.args, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            pass_fds=[s.fileno() for s in self._sockets],
        )
        for sock in self._sockets:
            sock.close()  # the server's now
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.wait_for_line("Running gRPC ModelServer at", timeout)
            if self.rest_port:
                self.wait_for_line("Exporting HTTP/REST API at", timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._append(line)

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            if self._reader is not None:
                self._reader.join(10)  # every line the process wrote
            raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")

    def stop(self, timeout: float = 60.0) -> int:
        for sock in self._sockets:
            sock.close()
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def model_path(path: Path) -> str:
    return str(path.resolve())
