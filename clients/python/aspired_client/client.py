"""`Client` (blocking) and `AsyncClient` (asyncio): one set of methods over gRPC or REST.

The target picks the protocol: `"host:8500"` (or `grpc://host:8500`, `unix:/path`, any grpcio target) is
gRPC through grpcio; `"http://host:8501"` / `"https://..."` is REST through httpx. Both are imported only
when a client of that protocol is made. Every method raises `ServingError` for what the server (or the
connection) reports, with TF Serving's message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from aspired_client import _ops
from aspired_client._ops import Call, GrpcCall, Operation, Protocol, RestCall, SignatureCache
from aspired_client.errors import Code, ServingError, code_from_http
from aspired_client.examples import Features
from aspired_client.types import ModelMetadata, VersionStatus

# grpcio's default 4 MiB receive limit is too small for tensors; TF Serving's own limit is 2 GiB.
GRPC_OPTIONS = (("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1))
JSON_HEADERS = {"content-type": "application/json"}


def protocol_of(target: str) -> tuple[Protocol, str]:
    """("rest", base URL) for http(s):// targets, else ("grpc", grpcio target)."""
    if target.startswith(("http://", "https://")):
        return "rest", target.rstrip("/")
    return "grpc", target.removeprefix("grpc://")


def _grpc_error(error: Any) -> ServingError:
    code = error.code()
    return ServingError(Code(code.value[0]), error.details() or "")


def _rest_answer(call: RestCall, status: int, content: bytes) -> Any:
    try:
        document = json.loads(content) if content else None
    except ValueError:
        document = None
    if status in call.statuses:
        return status, document
    if status != 200:
        if isinstance(document, dict) and isinstance(document.get("error"), str):
            message = document["error"]
        else:
            message = content.decode(errors="replace").strip()
        raise ServingError(code_from_http(status), message, status)
    if document is None:
        raise ServingError(
            Code.INTERNAL, f"the server answered {call.path} with a body that is not JSON", status
        )
    return document


class _Methods:
    """The public methods, each turning its arguments into an operation for `_run`."""

    _protocol: Protocol
    _cache: SignatureCache
    _timeout: float | None

    def _run(self, operation: Operation, timeout: float | None) -> Any:
        raise NotImplementedError

    def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        outputs: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Predict: `{alias: array}` in, `{alias: array}` out. Inputs are numpy arrays (or anything
        `np.asarray` takes, or a TensorProto from `make_tensor_proto`); strings are bytes or str, answered
        as bytes. `outputs` filters the outputs (over REST the filter is applied here: TF Serving's REST
        API always answers every output)."""
        operation = _ops.predict(
            self._protocol, self._cache, model, inputs, version, label, signature, outputs
        )
        return self._run(operation, timeout)

    def classify(
        self,
        model: str,
        examples: Sequence[Features],
        context: Features | None = None,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Classify dicts of features (see `aspired_client.examples`): per example a list of (label, score)."""
        operation = _ops.classify(self._protocol, model, examples, context, version, label, signature)
        return self._run(operation, timeout)

    def regress(
        self,
        model: str,
        examples: Sequence[Features],
        context: Features | None = None,
        version: int | None = None,
        label: str | None = None,
        signature: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Regress dicts of features: one float per example."""
        operation = _ops.regress(self._protocol, model, examples, context, version, label, signature)
        return self._run(operation, timeout)

    def metadata(
        self, model: str, version: int | None = None, label: str | None = None, timeout: float | None = None
    ) -> Any:
        """The model's signatures (GetModelMetadata / `GET .../metadata`) as a `ModelMetadata`."""
        return self._run(_ops.get_metadata(self._protocol, model, version, label), timeout)

    def status(self, model: str, version: int | None = None, timeout: float | None = None) -> Any:
        """The state of each version (GetModelStatus / `GET /v1/models/<model>`): a list of `VersionStatus`."""
        return self._run(_ops.get_status(self._protocol, model, version), timeout)

    def reload_config(self, config: Any, timeout: float | None = None) -> Any:
        """HandleReloadConfigRequest (gRPC only, as in TF Serving) with a ModelServerConfig: a message, its
        text format (the contents of a `models.config`) or a `pathlib.Path` to one."""
        return self._run(_ops.reload_config(self._protocol, config), timeout)

    def health(self, model: str | None = None, timeout: float | None = None) -> Any:
        """True when the model has an AVAILABLE version, or without a model when the server says it is
        serving (grpc.health.v1 over gRPC, `/readyz` over REST)."""
        return self._run(_ops.health(self._protocol, model), timeout)


class Client(_Methods):
    """A blocking client; use it as a context manager or `close()` it. Thread-safe (grpcio and httpx are)."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = None,
        grpc_credentials: Any = None,
        grpc_options: Sequence[tuple[str, Any]] = (),
        http_verify: Any = True,
    ) -> None:
        self._protocol, address = protocol_of(target)
        self._cache = {}
        self._timeout = timeout
        self._methods: dict[str, Any] = {}
        if self._protocol == "grpc":
            import grpc

            self._grpc_error_type = grpc.RpcError
            options = [*GRPC_OPTIONS, *grpc_options]
            if grpc_credentials is None:
                self._channel = grpc.insecure_channel(address, options=options)
            else:
                self._channel = grpc.secure_channel(address, grpc_credentials, options=options)
        else:
            import httpx

            self._httpx = httpx
            self._http = httpx.Client(base_url=address, verify=http_verify, headers=JSON_HEADERS)

    def _call(self, call: Call, timeout: float | None) -> Any:
        if isinstance(call, GrpcCall):
            method = self._methods.get(call.path)
            if method is None:
                method = self._channel.unary_unary(
                    call.path,
                    request_serializer=type(call.request).SerializeToString,
                    response_deserializer=call.response_type.FromString,
                    _registered_method=True,  # as grpcio's own generated stubs: registered once with the core
                )
                self._methods[call.path] = method
            try:
                return method(call.request, timeout=timeout)
            except self._grpc_error_type as error:
                raise _grpc_error(error) from None
        httpx = self._httpx
        content = None if call.body is None else _ops.dumps(call.body)
        try:
            response = self._http.request(call.method, call.path, content=content, timeout=timeout)
        except httpx.TimeoutException as error:
            raise ServingError(Code.DEADLINE_EXCEEDED, str(error) or "timed out") from None
        except httpx.TransportError as error:
            raise ServingError(Code.UNAVAILABLE, str(error) or type(error).__name__) from None
        return _rest_answer(call, response.status_code, response.content)

    def _run(self, operation: Operation, timeout: float | None) -> Any:
        timeout = self._timeout if timeout is None else timeout
        try:
            call = next(operation)
            while True:
                call = operation.send(self._call(call, timeout))
        except StopIteration as done:
            return done.value

    def close(self) -> None:
        if self._protocol == "grpc":
            self._channel.close()
        else:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Methods):
    """The asyncio client: the same methods as `Client`, awaited (`await client.predict(...)`). Use it as
    an async context manager or `await close()`."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = None,
        grpc_credentials: Any = None,
        grpc_options: Sequence[tuple[str, Any]] = (),
        http_verify: Any = True,
    ) -> None:
        self._protocol, self._address = protocol_of(target)
        self._cache = {}
        self._timeout = timeout
        self._methods: dict[str, Any] = {}
        self._channel: Any = None
        self._credentials = grpc_credentials
        self._options = [*GRPC_OPTIONS, *grpc_options]
        if self._protocol == "rest":
            import httpx

            self._httpx = httpx
            self._http = httpx.AsyncClient(base_url=self._address, verify=http_verify, headers=JSON_HEADERS)

    def _grpc_channel(self) -> Any:
        """grpc.aio channels belong to the event loop that first uses them: made on the first call."""
        if self._channel is None:
            from grpc import aio

            if self._credentials is None:
                self._channel = aio.insecure_channel(self._address, options=self._options)
            else:
                self._channel = aio.secure_channel(self._address, self._credentials, options=self._options)
        return self._channel

    async def _call(self, call: Call, seconds: float | None) -> Any:
        if isinstance(call, GrpcCall):
            import grpc

            method = self._methods.get(call.path)
            if method is None:
                method = self._grpc_channel().unary_unary(
                    call.path,
                    request_serializer=type(call.request).SerializeToString,
                    response_deserializer=call.response_type.FromString,
                    _registered_method=True,  # as grpcio's own generated stubs: registered once with the core
                )
                self._methods[call.path] = method
            try:
                return await method(call.request, timeout=seconds)
            except grpc.RpcError as error:
                raise _grpc_error(error) from None
        httpx = self._httpx
        content = None if call.body is None else _ops.dumps(call.body)
        try:
            response = await self._http.request(call.method, call.path, content=content, timeout=seconds)
        except httpx.TimeoutException as error:
            raise ServingError(Code.DEADLINE_EXCEEDED, str(error) or "timed out") from None
        except httpx.TransportError as error:
            raise ServingError(Code.UNAVAILABLE, str(error) or type(error).__name__) from None
        return _rest_answer(call, response.status_code, response.content)

    async def _run(self, operation: Operation, seconds: float | None) -> Any:
        seconds = self._timeout if seconds is None else seconds
        try:
            call = next(operation)
            while True:
                call = operation.send(await self._call(call, seconds))
        except StopIteration as done:
            return done.value

    async def close(self) -> None:
        if self._protocol == "grpc":
            if self._channel is not None:
                await self._channel.close()
        else:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


__all__ = ["AsyncClient", "Client", "ModelMetadata", "VersionStatus"]
