"""The Open Inference Protocol (KServe V2) over gRPC: `inference.GRPCInferenceService` on the same grpclib
servers as TF Serving's services.

Each method goes through the shared gRPC envelope (`Frontend.unary`: request record and id, drain gate,
deadline, `ServingError` -> status, one `request_finished` line and its metrics) and translates wire messages
with `svc.wire.v2_request`; the logic is `svc.inference.open_inference`, on the same path as Predict.
"""

from __future__ import annotations

from typing import Any

import anyio
from grpclib.server import Stream

from svc._proto.inference import grpc_service_grpc
from svc._proto.inference import grpc_service_pb2 as pb
from svc.frontends.grpc import Frontend
from svc.inference import open_inference as v2
from svc.lifecycle.readiness import Readiness
from svc.request_context import current_request
from svc.wire import v2_request

OFFLOAD_BYTES = 1 << 20  # requests above this are decoded and answered in a worker thread


def _note_model(name: str) -> None:
    record = current_request.get()
    if record is not None:
        record.model = name


class InferenceService(grpc_service_grpc.GRPCInferenceServiceBase):
    def __init__(
        self, frontend: Frontend, readiness: Readiness, repository: v2.ModelRepository | None = None
    ) -> None:
        self._f = frontend
        self._readiness = readiness
        self._repository = repository

    async def ServerLive(self, stream: Stream[Any, Any]) -> None:
        async def handle(request: Any, deadline: float | None) -> Any:
            return pb.ServerLiveResponse(live=True)

        await self._f.unary("ServerLive", stream, handle)

    async def ServerReady(self, stream: Stream[Any, Any]) -> None:
        async def handle(request: Any, deadline: float | None) -> Any:
            return pb.ServerReadyResponse(ready=self._readiness.ready())

        await self._f.unary("ServerReady", stream, handle)

    async def ModelReady(self, stream: Stream[Any, Any]) -> None:
        async def handle(request: pb.ModelReadyRequest, deadline: float | None) -> Any:
            _note_model(request.name)
            return pb.ModelReadyResponse(ready=v2.model_ready(self._f.core, request.name, request.version))

        await self._f.unary("ModelReady", stream, handle)

    async def ServerMetadata(self, stream: Stream[Any, Any]) -> None:
        async def handle(request: Any, deadline: float | None) -> Any:
            meta = v2.ServerMetadata()
            return pb.ServerMetadataResponse(name=meta.name, version=meta.version, extensions=meta.extensions)

        await self._f.unary("ServerMetadata", stream, handle)

    async def ModelMetadata(self, stream: Stream[Any, Any]) -> None:
        async def handle(request: pb.ModelMetadataRequest, deadline: float | None) -> Any:
            _note_model(request.name)
            meta = v2.model_metadata(self._f.core, request.name, request.version)
            response = pb.ModelMetadataResponse(name=meta.name, versions=meta.versions, platform=meta.platform)
            for tensor in meta.inputs:
                response.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            for tensor in meta.outputs:
                response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            return response

        await self._f.unary("ModelMetadata", stream, handle)

    async def ModelInfer(self, stream: Stream[Any, Any]) -> None:
        core = self._f.core

        async def handle(request: pb.ModelInferRequest, deadline: float | None) -> Any:
            _note_model(request.model_name)
            big = sum(len(c) for c in request.raw_input_contents) > OFFLOAD_BYTES
            if big:
                parsed = await anyio.to_thread.run_sync(v2_request.parse_grpc_request, request)
            else:
                parsed = v2_request.parse_grpc_request(request)
            response = await v2.infer(core, parsed, deadline=deadline)
            if big or sum(o.array.nbytes for o in response.outputs) > OFFLOAD_BYTES:
                return await anyio.to_thread.run_sync(v2_request.grpc_response, response, parsed.raw)
            return v2_request.grpc_response(response, parsed.raw)

        await self._f.unary("ModelInfer", stream, handle)

    async def RepositoryIndex(self, stream: Stream[Any, Any]) -> None:
        async def handle(request: pb.RepositoryIndexRequest, deadline: float | None) -> Any:
            response = pb.RepositoryIndexResponse()
            for entry in await v2.index(self._f.core, self._repository, request.ready):
                response.models.add(name=entry.name, version=entry.version, state=entry.state, reason=entry.reason)
            return response

        await self._f.unary("RepositoryIndex", stream, handle)

    async def RepositoryModelLoad(self, stream: Stream[Any, Any]) -> None:
        async def handle(request: pb.RepositoryModelLoadRequest, deadline: float | None) -> Any:
            _note_model(request.model_name)
            await v2.load(self._repository, request.model_name, dict(request.parameters))
            return pb.RepositoryModelLoadResponse()

        await self._f.unary("RepositoryModelLoad", stream, handle)

    async def RepositoryModelUnload(self, stream: Stream[Any, Any]) -> None:
        async def handle(request: pb.RepositoryModelUnloadRequest, deadline: float | None) -> Any:
            _note_model(request.model_name)
            await v2.unload(self._repository, request.model_name, dict(request.parameters))
            return pb.RepositoryModelUnloadResponse()

        await self._f.unary("RepositoryModelUnload", stream, handle)
