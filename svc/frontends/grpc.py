"""The gRPC frontend: TF Serving's PredictionService and ModelService on grpclib.

Service bases are the grpclib stubs that `make proto` generates from tensorflow-serving-api's own
descriptors; messages are the official protobuf classes. Each method hands the call to `svc.inference` inside
the shared envelope (`svc/frontends/envelope.py`: request record, drain gate, status) and renders a
`ServingError` as a gRPC status, once, here (TF Serving's `model_servers/prediction_service_impl.cc`,
`model_service_impl.cc`). The request id comes from `x-request-id` metadata and returns in the initial
metadata; a gRPC deadline bounds the call's whole stay.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from google.protobuf.message import DecodeError
from grpclib import GRPCError
from grpclib._typing import IServable
from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.health.service import Health
from grpclib.server import Stream
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)

from svc._proto.tensorflow_serving.apis import model_service_grpc, prediction_service_grpc
from svc.errors import Code, ServingError, grpc_message, invalid_argument
from svc.frontends.envelope import Envelope
from svc.frontends.grpc_server import ChannelSettings
from svc.frontends.request_log import REQUEST_ID_HEADER
from svc.inference import classify_regress, model_info, model_management, predict
from svc.inference.core import Core
from svc.inference.open_inference import ModelRepository
from svc.lifecycle.readiness import Readiness

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
    if stream._stream.buffer._eof:  # the client has sent all of it: nothing to wait for (no timer, issue 11)
        data = await _receive_body(stream)
    else:
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


class Frontend:
    """What every gRPC method shares: the core and the envelope (record, gate, deadline, status, drain)."""

    def __init__(self, core: Core, envelope: Envelope, read_timeout: float = 30.0) -> None:
        self.core = core
        self.envelope = envelope
        self.read_timeout = read_timeout  # --request_read_timeout_seconds

    async def unary(self, method: str, stream: Stream[Any, Any], handler: Handler) -> None:
        metadata = dict(stream.metadata or {})
        sent_id = _text(metadata.get(REQUEST_ID_HEADER))
        record = self.envelope.start("grpc", method, sent_id)
        if method in _TF_APIS:
            record.tf_api = method
        deadline = self.envelope.deadline(stream.deadline.time_remaining() if stream.deadline else None)

        async def call() -> None:
            # In flight from its headers on: a call still being received at SIGTERM is served (issue 10).
            try:
                request = await receive_request(stream, self.read_timeout)
                record.model = request.model_spec.name if hasattr(request, "model_spec") else ""
                response = await handler(request, deadline)
                if record.request_id == sent_id:  # echoed only when the client sent one (issue 11)
                    await stream.send_initial_metadata(metadata={REQUEST_ID_HEADER: record.request_id})
                await stream.send_message(response)
            except GRPCError as exc:  # the codec refused the response (grpc.max_send_message_length)
                raise ServingError(Code(exc.status.value), exc.message or "") from None

        try:
            await self.envelope.run(record, call)
        except ServingError as exc:
            raise grpc_error(exc) from None


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else None


class PredictionService(prediction_service_grpc.PredictionServiceBase):
    def __init__(self, frontend: Frontend) -> None:
        self._f = frontend

    async def Predict(self, stream: Stream[predict_pb2.PredictRequest, predict_pb2.PredictResponse]) -> None:
        core = self._f.core
        await self._f.unary("Predict", stream, lambda r, d: predict.predict(core, r, deadline=d))

    async def GetModelMetadata(
        self, stream: Stream[get_model_metadata_pb2.GetModelMetadataRequest, get_model_metadata_pb2.GetModelMetadataResponse]
    ) -> None:
        await self._f.unary("GetModelMetadata", stream, _now(lambda r: model_info.get_model_metadata(self._f.core, r)))

    async def Classify(
        self, stream: Stream[classification_pb2.ClassificationRequest, classification_pb2.ClassificationResponse]
    ) -> None:
        core = self._f.core
        await self._f.unary("Classify", stream, lambda r, d: classify_regress.classify(core, r, deadline=d))

    async def Regress(
        self, stream: Stream[regression_pb2.RegressionRequest, regression_pb2.RegressionResponse]
    ) -> None:
        core = self._f.core
        await self._f.unary("Regress", stream, lambda r, d: classify_regress.regress(core, r, deadline=d))

    async def MultiInference(
        self, stream: Stream[inference_pb2.MultiInferenceRequest, inference_pb2.MultiInferenceResponse]
    ) -> None:
        core = self._f.core
        await self._f.unary(
            "MultiInference", stream, lambda r, d: classify_regress.multi_inference(core, r, deadline=d)
        )


class ModelService(model_service_grpc.ModelServiceBase):
    def __init__(self, frontend: Frontend) -> None:
        self._f = frontend

    async def GetModelStatus(
        self, stream: Stream[get_model_status_pb2.GetModelStatusRequest, get_model_status_pb2.GetModelStatusResponse]
    ) -> None:
        await self._f.unary("GetModelStatus", stream, _now(lambda r: model_info.get_model_status(self._f.core, r)))

    async def HandleReloadConfigRequest(
        self, stream: Stream[model_management_pb2.ReloadConfigRequest, model_management_pb2.ReloadConfigResponse]
    ) -> None:
        core = self._f.core
        await self._f.unary(
            "HandleReloadConfigRequest", stream, lambda r, d: model_management.reload_config(core, r)
        )


def services(
    core: Core,
    envelope: Envelope,
    readiness: Readiness,
    *,
    health: bool,
    repository: ModelRepository | None = None,
    read_timeout: float = 30.0,
) -> list[IServable]:
    """The gRPC handlers of one server: TF Serving's two services, the Open Inference Protocol's, and (with
    `health`) grpc.health.v1 tracking readiness for each."""
    from svc.frontends.grpc_v2 import InferenceService  # built on this module's Frontend

    frontend = Frontend(core, envelope, read_timeout)
    served: list[IServable] = [
        PredictionService(frontend), ModelService(frontend), InferenceService(frontend, readiness, repository)
    ]
    if not health:
        return served
    return [*served, Health({service: [readiness.status] for service in served})]


def _now(answer: Callable[[Any], Any]) -> Handler:
    """A handler for an API that answers at once (no run, no deadline)."""

    async def handle(request: Any, deadline: float | None) -> Any:
        return answer(request)

    return handle
