"""The transport ceiling: an echo server on the same stack as aspired, with no model behind it.

gRPC: grpclib's low-level `Server` with a handler object whose `__mapping__()` serves
`/tensorflow.serving.PredictionService/Predict` (official protobuf classes, grpclib's ProtoCodec), answering
every request with one fixed PredictResponse. The request is still decoded (grpclib's codec does it), as any
real server must. REST: a starlette app on hypercorn (HTTP/1.1 and h2c) answering
`POST /v1/models/<name>:predict` with a fixed JSON body after parsing the request JSON, and
`GET /v1/models/<name>` with an AVAILABLE status, so run_all.py waits for it as for the real server.
Both listen on 127.0.0.1 in one asyncio event loop, like the real server. SIGTERM / SIGINT stop it.

    python bench/echo_server.py --port=8500 --rest_api_port=8501 [--response=half_plus_two|mlp]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Mapping
from typing import Any

import grpclib.const
import grpclib.server
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

HOST = "127.0.0.1"
PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"


def _tensor(dtype: int, shape: list[int], **values: list[Any]) -> tensor_pb2.TensorProto:
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in shape]
    return tensor_pb2.TensorProto(
        dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims), **values
    )


def fixed_response(kind: str) -> tuple[predict_pb2.PredictResponse, bytes]:
    """The gRPC response and the REST body a real server would give for the loadgen's payload `kind`."""
    response = predict_pb2.PredictResponse()
    response.model_spec.name = kind
    response.model_spec.version.value = 1
    response.model_spec.signature_name = "serving_default"
    if kind == "half_plus_two":
        y = [2.5, 3.0, 4.5]
        response.outputs["y"].CopyFrom(_tensor(types_pb2.DT_FLOAT, [3, 1], float_val=y))
        body: dict[str, Any] = {"predictions": [[v] for v in y]}
    else:  # mlp: one image in, 10 scores and a class out
        scores = [0.1] * 10
        response.outputs["scores"].CopyFrom(_tensor(types_pb2.DT_FLOAT, [1, 10], float_val=scores))
        response.outputs["classes"].CopyFrom(_tensor(types_pb2.DT_INT64, [1], int64_val=[0]))
        body = {"predictions": [{"scores": scores, "classes": 0}]}
    return response, json.dumps(body).encode()


class EchoPredictionService:
    """A grpclib handler object: `__mapping__` is all grpclib's Server asks of a service."""

    def __init__(self, response: predict_pb2.PredictResponse) -> None:
        self._response = response

    async def predict(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_message(self._response)

    def __mapping__(self) -> Mapping[str, grpclib.const.Handler]:
        return {
            PREDICT_PATH: grpclib.const.Handler(
                self.predict,
                grpclib.const.Cardinality.UNARY_UNARY,
                predict_pb2.PredictRequest,
                predict_pb2.PredictResponse,
            )
        }


def rest_app(body: bytes) -> Starlette:
    status = json.dumps(
        {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK"}}]}
    ).encode()

    async def predict(request: Request) -> Response:
        json.loads(await request.body())
        return Response(body, media_type="application/json")

    async def model_status(request: Request) -> Response:
        return Response(status, media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/models/{name}:predict", predict, methods=["POST"]),
            Route("/v1/models/{name}", model_status, methods=["GET"]),
        ]
    )


async def run(grpc_port: int, rest_port: int, kind: str) -> None:
    response, body = fixed_response(kind)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    grpc_server = grpclib.server.Server([EchoPredictionService(response)])
    await grpc_server.start(HOST, grpc_port)
    config = Config()
    config.bind = [f"{HOST}:{rest_port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    print(f"echo server: grpc {HOST}:{grpc_port} rest {HOST}:{rest_port}", flush=True)
    try:
        await serve(rest_app(body), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    finally:
        grpc_server.close()
        await grpc_server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8500, help="gRPC port")
    parser.add_argument("--rest_api_port", type=int, default=8501, help="REST port")
    parser.add_argument("--response", choices=["half_plus_two", "mlp"], default="half_plus_two")
    args = parser.parse_args()
    asyncio.run(run(args.port, args.rest_api_port, args.response))


if __name__ == "__main__":
    main()
