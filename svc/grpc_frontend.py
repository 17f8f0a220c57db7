"""The gRPC frontend: TF Serving's PredictionService and ModelService on grpclib.

Service bases are the grpclib stubs that `make proto` generates from tensorflow-serving-api's own
descriptors; messages are the official protobuf classes. Each method translates the call into `svc.api`
and `ServingError` into a gRPC status, once, here (TF Serving's `model_servers/prediction_service_impl.cc`,
`model_service_impl.cc`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from grpclib import GRPCError
from grpclib.const import Status
from grpclib.server import Stream

from svc import api
from svc._proto.tensorflow_serving.apis import model_service_grpc, prediction_service_grpc
from svc.errors import Code, ServingError, grpc_message
from svc.logging import get_logger

log = get_logger(frontend="grpc")

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def grpc_error(exc: ServingError) -> GRPCError:
    return GRPCError(Status(int(exc.code)), grpc_message(exc.message))


async def _unary(
    method: str, stream: Stream[Req, Resp], handler: Callable[[Req], Awaitable[Resp]]
) -> None:
    request = await stream.recv_message()
    assert request is not None
    started = time.perf_counter()
    status = Code.OK
    try:
        response = await handler(request)
    except ServingError as exc:
        status = exc.code
        raise grpc_error(exc) from None
    except Exception:
        status = Code.INTERNAL
        log.exception("request_crashed", api=method)
        raise GRPCError(Status.INTERNAL, "Internal error") from None
    finally:
        log.debug("request_finished", api=method, status=status.name,
                  latency_ms=round((time.perf_counter() - started) * 1000, 3))
    await stream.send_message(response)


def _unimplemented(what: str) -> GRPCError:
    return GRPCError(Status.UNIMPLEMENTED, f"{what} is not implemented by this server yet")


class PredictionService(prediction_service_grpc.PredictionServiceBase):
    def __init__(self, core: api.Core) -> None:
        self._core = core

    async def Predict(self, stream: Stream[Any, Any]) -> None:
        await _unary("Predict", stream, lambda r: api.predict(self._core, r))

    async def GetModelMetadata(self, stream: Stream[Any, Any]) -> None:
        async def handle(request: Any) -> Any:
            return api.get_model_metadata(self._core, request)

        await _unary("GetModelMetadata", stream, handle)

    async def Classify(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        raise _unimplemented("Classify")

    async def Regress(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        raise _unimplemented("Regress")

    async def MultiInference(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        raise _unimplemented("MultiInference")


class ModelService(model_service_grpc.ModelServiceBase):
    def __init__(self, core: api.Core) -> None:
        self._core = core

    async def GetModelStatus(self, stream: Stream[Any, Any]) -> None:
        async def handle(request: Any) -> Any:
            return api.get_model_status(self._core, request)

        await _unary("GetModelStatus", stream, handle)

    async def HandleReloadConfigRequest(self, stream: Stream[Any, Any]) -> None:
        await _unary("HandleReloadConfigRequest", stream, lambda r: api.reload_config(self._core, r))
