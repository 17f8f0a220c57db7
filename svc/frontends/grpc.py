"""The gRPC frontend: TF Serving's PredictionService and ModelService on grpclib.

Service bases are the grpclib stubs that `make proto` generates from tensorflow-serving-api's own
descriptors; messages are the official protobuf classes. Each method translates the call into `svc.inference.predict`
and `ServingError` into a gRPC status, once, here (TF Serving's `model_servers/prediction_service_impl.cc`,
`model_service_impl.cc`). Every call gets a request record (id from `x-request-id` metadata, returned in the
initial metadata), one `request_finished` line and its metrics; a gRPC deadline bounds its whole stay.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from google.protobuf.message import DecodeError
from grpclib import GRPCError
from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.server import Stream

from svc._proto.tensorflow_serving.apis import model_service_grpc, prediction_service_grpc
from svc.errors import Code, ServingError, grpc_message, invalid_argument
from svc.frontends.grpc_server import ChannelSettings
from svc.frontends.request_log import REQUEST_ID_HEADER, RequestLog
from svc.inference import classify_regress as inference
from svc.inference import predict as api
from svc.logging import get_logger

log = get_logger(frontend="grpc")

# TF Serving records its request metrics for these gRPC methods only.
_TF_APIS = {"Predict", "Classify", "Regress"}

Handler = Callable[[Any, float | None], Awaitable[Any]]


def grpc_error(exc: ServingError) -> GRPCError:
    return GRPCError(Status(int(exc.code)), grpc_message(exc.message))


async def receive_request(stream: Stream[Any, Any], read_timeout: float = 30.0) -> Any:
    """The unary request message, read as grpclib's `recv_message` does but with the request limit checked
    against the 5-byte length prefix *before* the body is buffered, a bound on the time to receive it, and
    every client mistake a ServingError (issue 10: a 100 MB declared message was buffered whole; a stalled
    one was held for ever; an undecodable one was UNKNOWN with a traceback and no request line)."""
    with anyio.move_on_after(read_timeout) as scope:
        data = await _receive_body(stream)
    if scope.cancelled_caught:
        raise ServingError(Code.DEADLINE_EXCEEDED, f"Request message not received within {read_timeout:g} s")
    try:
        return stream._codec.decode(data, stream._recv_type)
    except DecodeError as exc:
        raise invalid_argument(f"Could not parse the request message: {exc}") from None


async def _receive_body(stream: Stream[Any, Any]) -> bytes:
    try:
        return await _receive_frame(stream)
    except AssertionError:  # grpclib's "Received less data than expected": the client ended the stream early
        raise invalid_argument("Request message truncated") from None


async def _receive_frame(stream: Stream[Any, Any]) -> bytes:
    inner = stream._stream
    header = await inner.recv_data(5)
    if len(header) < 5:
        raise invalid_argument("Missing request message")
    if header[0]:
        raise ServingError(Code.UNIMPLEMENTED, "Compressed request messages are not supported")
    (length,) = struct.unpack(">I", header[1:])
    limit = getattr(stream._codec, "max_bytes", None)
    if limit is not None and length > limit:
        raise ServingError(
            Code.RESOURCE_EXHAUSTED, f"Request message of {length} bytes is larger than the limit of {limit} bytes"
        )
    data: bytes = await inner.recv_data(length)
    if len(data) < length:
        raise invalid_argument(f"Request message truncated: {len(data)} of {length} bytes")
    return data


class RequestLimitCodec(ProtoCodec):
    """Refuses a request message above `--max_request_bytes` (and `grpc.max_receive_message_length`)
    before parsing it, and a response above `grpc.max_send_message_length` (gRPC core's text)."""

    def __init__(self, max_bytes: int, channel: ChannelSettings | None = None) -> None:
        receive = channel.max_receive_message_length if channel is not None else None
        self.max_bytes = max_bytes if receive is None else min(max_bytes, receive)
        self._max_send = channel.max_send_message_length if channel is not None else None

    def decode(self, data: bytes, message_type: Any) -> Any:
        if len(data) > self.max_bytes:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"Request message of {len(data)} bytes is larger than the limit of {self.max_bytes} bytes",
            )
        return super().decode(data, message_type)

    def encode(self, message: Any, message_type: Any) -> bytes:
        data = super().encode(message, message_type)
        if self._max_send is not None and len(data) > self._max_send:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED, f"Sent message larger than max ({len(data)} vs. {self._max_send})"
            )
        return data


@dataclass
class Frontend:
    """What every gRPC method shares: the core, the request log, and the drain gate."""

    core: api.Core
    requests: RequestLog
    read_timeout: float = 30.0  # --request_read_timeout_seconds
    accepting: bool = True
    inflight: int = 0
    _idle: anyio.Event | None = None

    async def unary(self, method: str, stream: Stream[Any, Any], handler: Handler) -> None:
        metadata = dict(stream.metadata or {})
        sent_id = _text(metadata.get(REQUEST_ID_HEADER))
        record = self.requests.start("grpc", method, sent_id)
        if method in _TF_APIS:
            record.tf_api = method
        if not self.accepting:
            self.requests.finish(record, Code.UNAVAILABLE.name, "server is shutting down")
            raise GRPCError(Status.UNAVAILABLE, "Server is shutting down")
        deadline = None
        if stream.deadline is not None:
            deadline = anyio.current_time() + stream.deadline.time_remaining()
        # In flight from its headers on: a call still being received when SIGTERM arrives is served (issue 10).
        self.inflight += 1
        code = Code.OK
        try:
            request = await receive_request(stream, self.read_timeout)
            record.model = request.model_spec.name if hasattr(request, "model_spec") else ""
            response = await handler(request, deadline)
            if record.request_id == sent_id:  # echoed only when the client sent one (issue 11)
                await stream.send_initial_metadata(metadata={REQUEST_ID_HEADER: record.request_id})
            await stream.send_message(response)
        except ServingError as exc:
            code = exc.code
            self.requests.finish(record, code.name, exc.message)
            raise grpc_error(exc) from None
        except GRPCError as exc:  # the codec refused the response (grpc.max_send_message_length)
            code = Code(exc.status.value)
            self.requests.finish(record, code.name, exc.message or "")
            raise
        except Exception:
            code = Code.INTERNAL
            log.exception("request_crashed", api=method, request_id=record.request_id)
            self.requests.finish(record, code.name, "internal error")
            raise GRPCError(Status.INTERNAL, "Internal error") from None
        except BaseException:  # the client went away (grpclib cancels the handler) or the server stops
            self.requests.finish(record, Code.CANCELLED.name, "cancelled")
            raise
        finally:
            self.inflight -= 1
            if not self.inflight and self._idle is not None:
                self._idle.set()
        self.requests.finish(record, code.name)

    async def wait_idle(self) -> None:
        """Wait until no call is in flight (new ones are refused once `accepting` is False)."""
        if self.inflight:
            self._idle = anyio.Event()
            await self._idle.wait()


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else None


class PredictionService(prediction_service_grpc.PredictionServiceBase):
    def __init__(self, frontend: Frontend) -> None:
        self._f = frontend

    async def Predict(self, stream: Stream[Any, Any]) -> None:
        core = self._f.core
        await self._f.unary("Predict", stream, lambda r, d: api.predict(core, r, deadline=d))

    async def GetModelMetadata(self, stream: Stream[Any, Any]) -> None:
        async def handle(request: Any, deadline: float | None) -> Any:
            return api.get_model_metadata(self._f.core, request)

        await self._f.unary("GetModelMetadata", stream, handle)

    async def Classify(self, stream: Stream[Any, Any]) -> None:
        core = self._f.core
        await self._f.unary("Classify", stream, lambda r, d: inference.classify(core, r, deadline=d))

    async def Regress(self, stream: Stream[Any, Any]) -> None:
        core = self._f.core
        await self._f.unary("Regress", stream, lambda r, d: inference.regress(core, r, deadline=d))

    async def MultiInference(self, stream: Stream[Any, Any]) -> None:
        core = self._f.core
        await self._f.unary(
            "MultiInference", stream, lambda r, d: inference.multi_inference(core, r, deadline=d)
        )


class ModelService(model_service_grpc.ModelServiceBase):
    def __init__(self, frontend: Frontend) -> None:
        self._f = frontend

    async def GetModelStatus(self, stream: Stream[Any, Any]) -> None:
        async def handle(request: Any, deadline: float | None) -> Any:
            return api.get_model_status(self._f.core, request)

        await self._f.unary("GetModelStatus", stream, handle)

    async def HandleReloadConfigRequest(self, stream: Stream[Any, Any]) -> None:
        core = self._f.core
        await self._f.unary("HandleReloadConfigRequest", stream, lambda r, d: api.reload_config(core, r))
