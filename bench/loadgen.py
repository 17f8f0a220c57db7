"""Closed-loop load generator for TF Serving's Predict API over gRPC or REST, and for the Open Inference
Protocol (V2: `--target v2grpc`, ModelInfer with `raw_input_contents`; `--target v2rest`, POST .../infer with
the binary tensor data extension, binary outputs); prints one JSON line.

N workers each send a request, wait for the answer and send the next, for `--warmup` + `--duration`
seconds. Only requests that start after the warm-up and finish before the end are counted; errors likewise.
gRPC goes through grpcio's asyncio API with the official `tensorflow_serving.apis` stub (one channel, i.e.
one HTTP/2 connection, per process unless `--channels`); REST through
one httpx AsyncClient per worker, HTTP/1.1 keep-alive (one connection each).

One Python process tops out around a few thousand requests/s, so `--processes P` splits the workers over P
child processes that start together and whose latencies are merged. On a small machine the load generator
competes with the server for the same cores: report how many were used.

    python bench/loadgen.py --target grpc --addr 127.0.0.1:8500 --model half_plus_two \\
        --concurrency 16 --duration 10 [--payload half_plus_two|mlp] [--tensor_content] [--processes 2]

Output: {"rps": ..., "p50_ms": ..., "p90_ms": ..., "p99_ms": ..., "errors": ..., "count": ..., ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Call = Callable[[], Awaitable[None]]


@dataclass
class Tally:
    """What one process measured inside the window."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_sample: str = ""


def payload_arrays(payload: str, batch: int) -> tuple[str, np.ndarray]:
    """Input alias and float32 array for a payload: half_plus_two x [[1], [2], [5]] or mlp images [B, 784]."""
    if payload == "half_plus_two":
        return "x", np.array([[1.0], [2.0], [5.0]], dtype=np.float32)
    rng = np.random.default_rng(7)
    return "images", rng.random((batch, 784), dtype=np.float32)


def grpc_request(model: str, payload: str, batch: int, tensor_content: bool) -> Any:
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    alias, array = payload_arrays(payload, batch)
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in array.shape]
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims)
    )
    if tensor_content:
        tensor.tensor_content = array.tobytes()
    else:
        tensor.float_val.extend(array.ravel().tolist())
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_default"
    request.inputs[alias].CopyFrom(tensor)
    return request


def rest_body(payload: str, batch: int) -> bytes:
    """The row-format ("instances") body; for half_plus_two TF Serving's canonical [[1.0], [2.0], [5.0]]."""
    _, array = payload_arrays(payload, batch)
    return json.dumps({"instances": array.tolist()}).encode()


async def grpc_calls(
    args: argparse.Namespace, workers: int
) -> tuple[list[Call], Callable[[], Awaitable[None]]]:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = grpc_request(args.model, args.payload, args.batch, args.tensor_content)
    channels = [grpc.aio.insecure_channel(args.addr) for _ in range(max(1, args.channels))]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), args.timeout)
    stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]

    def make_call(stub: Any) -> Call:
        async def call() -> None:
            await stub.Predict(request, timeout=args.timeout)

        return call

    async def close() -> None:
        for channel in channels:
            await channel.close()

    return [make_call(stubs[i % len(stubs)]) for i in range(workers)], close


def v2_arrays(args: argparse.Namespace) -> tuple[str, np.ndarray]:
    return payload_arrays(args.payload, args.batch)


async def v2grpc_calls(
    args: argparse.Namespace, workers: int
) -> tuple[list[Call], Callable[[], Awaitable[None]]]:
    import grpc

    from svc._proto.inference import grpc_service_pb2 as pb

    alias, array = v2_arrays(args)
    request = pb.ModelInferRequest(model_name=args.model, raw_input_contents=[array.tobytes()])
    request.inputs.add(name=alias, datatype="FP32", shape=array.shape)
    channels = [grpc.aio.insecure_channel(args.addr) for _ in range(max(1, args.channels))]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), args.timeout)
    methods = [
        c.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        for c in channels
    ]

    def make_call(method: Any) -> Call:
        async def call() -> None:
            await method(request, timeout=args.timeout)

        return call

    async def close() -> None:
        for channel in channels:
            await channel.close()

    return [make_call(methods[i % len(methods)]) for i in range(workers)], close


def v2rest_body(args: argparse.Namespace) -> tuple[bytes, int]:
    alias, array = v2_arrays(args)
    raw = array.tobytes()
    tensor = {"name": alias, "datatype": "FP32", "shape": list(array.shape), "parameters": {"binary_data_size": len(raw)}}
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    return header + raw, len(header)


async def rest_calls(
    args: argparse.Namespace, workers: int
) -> tuple[list[Call], Callable[[], Awaitable[None]]]:
    import httpx

    url = f"http://{args.addr}/v1/models/{args.model}:predict"
    body = rest_body(args.payload, args.batch)
    headers = {"content-type": "application/json"}
    if args.target == "v2rest":
        url = f"http://{args.addr}/v2/models/{args.model}/infer"
        body, header_length = v2rest_body(args)
        headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(header_length)}
    # One client (one keep-alive connection) per worker: httpx's shared pool degrades badly under
    # concurrency (encode/httpx#3215), which would measure the client instead of the server.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [
        httpx.AsyncClient(limits=limits, timeout=args.timeout, headers=headers) for _ in range(workers)
    ]

    def make_call(client: httpx.AsyncClient) -> Call:
        async def call() -> None:
            response = await client.post(url, content=body)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

        return call

    async def close() -> None:
        for client in clients:
            await client.aclose()

    return [make_call(c) for c in clients], close


async def worker(call: Call, measure_from: float, end: float, tally: Tally) -> None:
    while (start := time.monotonic()) < end:
        try:
            await call()
            ok = True
        except Exception as error:  # noqa: BLE001  (a failed call is a data point, not a bug here)
            ok = False
            if not tally.error_sample:
                tally.error_sample = f"{type(error).__name__}: {error}"[:300]
        finish = time.monotonic()
        if start >= measure_from and finish <= end:
            if ok:
                tally.latencies.append(finish - start)
            else:
                tally.errors += 1


async def run_process(args: argparse.Namespace, workers: int, coordinated: bool) -> Tally:
    """Set up clients, (when coordinated) say READY and wait for the parent's start time, then load."""
    factory = {"grpc": grpc_calls, "v2grpc": v2grpc_calls}.get(args.target, rest_calls)
    calls, close = await factory(args, workers)
    try:
        if coordinated:
            print("READY", flush=True)
            start = float(await asyncio.to_thread(sys.stdin.readline))
        else:
            start = time.monotonic()
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        measure_from = start + args.warmup
        end = measure_from + args.duration
        tally = Tally()
        async with asyncio.timeout(args.warmup + args.duration + args.timeout + 5):
            await asyncio.gather(*(worker(call, measure_from, end, tally) for call in calls))
        return tally
    finally:
        await close()


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def child_argv(args: argparse.Namespace, workers: int) -> list[str]:
    argv = [sys.executable, __file__, "--_child"]
    for name, value in vars(args).items():
        if name in {"concurrency", "processes", "_child"} or value is False:
            continue
        argv.append(f"--{name}" if value is True else f"--{name}={value}")
    return [*argv, f"--concurrency={workers}", "--processes=1"]


def run_children(args: argparse.Namespace) -> Tally:
    """Start P children, wait until each is READY, give them one common start time, merge their tallies."""
    shares = [n for n in split(args.concurrency, min(args.processes, args.concurrency)) if n > 0]
    children = [
        subprocess.Popen(child_argv(args, n), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for n in shares
    ]
    try:
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline().strip()
            if line != "READY":
                raise SystemExit(f"load generator child failed to start: {line!r}")
        start = time.monotonic() + 0.2
        for child in children:
            assert child.stdin is not None
            child.stdin.write(f"{start}\n")
            child.stdin.flush()
        merged = Tally()
        for child in children:
            out, _ = child.communicate(timeout=args.warmup + args.duration + args.timeout + 30)
            part = json.loads(out)
            merged.latencies.extend(part["latencies"])
            merged.errors += part["errors"]
            merged.error_sample = merged.error_sample or part["error_sample"]
        return merged
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()


def summary(args: argparse.Namespace, tally: Tally) -> dict[str, Any]:
    lat_ms = np.array(tally.latencies) * 1e3
    # No successful call: percentiles are null (strict JSON has no NaN).
    p50, p90, p99 = (
        (round(float(p), 3) for p in np.percentile(lat_ms, [50, 90, 99])) if lat_ms.size else [None] * 3
    )
    return {
        "target": args.target,
        "addr": args.addr,
        "model": args.model,
        "payload": args.payload,
        "tensor_content": args.tensor_content,
        "concurrency": args.concurrency,
        "processes": min(args.processes, args.concurrency),
        "duration": args.duration,
        "rps": round(lat_ms.size / args.duration, 1),
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "errors": tally.errors,
        "count": int(lat_ms.size),
        "error_sample": tally.error_sample,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["grpc", "rest", "v2grpc", "v2rest"], required=True)
    parser.add_argument("--addr", required=True, help="host:port (loopback only)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--concurrency", type=int, default=1, help="closed-loop workers in all")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds run first and not counted")
    parser.add_argument("--payload", choices=["half_plus_two", "mlp"], default="half_plus_two")
    parser.add_argument("--batch", type=int, default=1, help="rows per request for the mlp payload")
    parser.add_argument("--tensor_content", action="store_true", help="gRPC: send tensor_content bytes")
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--channels", type=int, default=1, help="gRPC channels (connections) per process")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    parser.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.processes < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--concurrency and --processes must be >= 1, --duration > 0, --warmup >= 0")
    return args


def main() -> None:
    args = parse_args()
    if args._child:
        tally = asyncio.run(run_process(args, args.concurrency, coordinated=True))
        print(
            json.dumps(
                {"latencies": tally.latencies, "errors": tally.errors, "error_sample": tally.error_sample}
            )
        )
        return
    tally = (
        run_children(args) if args.processes > 1 else asyncio.run(run_process(args, args.concurrency, False))
    )
    print(json.dumps(summary(args, tally)))


if __name__ == "__main__":
    main()
