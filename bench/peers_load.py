"""Requests and load generators of bench/peers_bench.py: each server's own wire format for the same tensors,
`wrk` (HTTP/1.1) and `h2load` (gRPC over h2, pre-framed message bodies) as closed loops, and a probe that sends
each body once from Python to check the answer before the load starts.

Formats: TF Serving REST `instances` (aspired; KServe's V1 protocol takes the same body), Open Inference
Protocol REST `inputs` (MLServer, PyTriton), TF Serving gRPC Predict with `tensor_content` (aspired), Open
Inference Protocol gRPC ModelInfer with `raw_input_contents` (KServe, MLServer, PyTriton). A gRPC body is one
length-prefixed message (1 byte flag + 4 byte big-endian length + protobuf) sent with
`content-type: application/grpc` and `te: trailers`.

h2load counts HTTP statuses only, and a failed gRPC call is an HTTP 200 whose trailers carry the grpc-status,
so gRPC failures are counted from the DATA bytes received: every answer of a cell has the size of the probe's
answer (the servers' answers have a fixed size per request), an error answer carries no message, and the
shortfall of data bytes below (requests x answer size) gives the number of failed calls.
"""

from __future__ import annotations

import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

V2_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


@dataclass(frozen=True)
class Case:
    model: str
    api: str  # "rest" | "grpc"
    concurrency: int

    @property
    def label(self) -> str:
        return f"{'REST' if self.api == 'rest' else 'gRPC'} {self.model} c={self.concurrency}"


def model_inputs(model: str) -> dict[str, np.ndarray]:
    """The tensors of one request: one row (MLP, half_plus_two, image) or 256 rows of 20 features."""
    rng = np.random.default_rng(7)
    if model == "mlp":
        return {"images": np.round(rng.random((1, 784), dtype=np.float32), 4)}
    if model == "half_plus_two":
        return {"x": np.array([[1.5]], dtype=np.float32)}
    if model == "image":
        return {"images": rng.random((1, 224, 224, 3), dtype=np.float32)}
    if model == "recommender":
        cats = {f"cat{i:02d}": rng.integers(0, 100_000, (256, 1), dtype=np.int64) for i in range(10)}
        nums = {f"num{i:02d}": np.round(rng.random((256, 1), dtype=np.float32), 4) for i in range(10)}
        return cats | nums
    raise ValueError(model)


def rest_body(fmt: str, inputs: dict[str, np.ndarray]) -> bytes:
    if fmt == "instances":
        (value,) = inputs.values()  # the REST cases have one input
        return orjson.dumps({"instances": value.tolist()})
    tensors = [
        {"name": k, "shape": list(v.shape), "datatype": V2_DATATYPES[v.dtype], "data": v.ravel().tolist()}
        for k, v in inputs.items()
    ]
    return orjson.dumps({"inputs": tensors})


def grpc_body(fmt: str, model: str, inputs: dict[str, np.ndarray]) -> bytes:
    if fmt == "predict":
        from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorflow_serving.apis import predict_pb2

        dtypes = {np.dtype(np.float32): types_pb2.DT_FLOAT, np.dtype(np.int64): types_pb2.DT_INT64}
        predict = predict_pb2.PredictRequest()
        predict.model_spec.name = model
        for name, value in inputs.items():
            dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in value.shape]
            predict.inputs[name].CopyFrom(
                tensor_pb2.TensorProto(
                    dtype=dtypes[value.dtype],
                    tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims),
                    tensor_content=value.tobytes(),
                )
            )
        message = predict.SerializeToString()
    else:
        from svc._proto.inference import grpc_service_pb2 as pb

        infer = pb.ModelInferRequest(model_name=model)
        for name, value in inputs.items():
            infer.inputs.add(name=name, datatype=V2_DATATYPES[value.dtype], shape=list(value.shape))
            infer.raw_input_contents.append(value.tobytes())
        message = infer.SerializeToString()
    return b"\x00" + struct.pack(">I", len(message)) + message


def probe_rest(url: str, body: bytes) -> str | None:
    """None when the server answers 200 with outputs, else what went wrong."""
    try:
        answer = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if answer.status_code != 200:
        return f"HTTP {answer.status_code}: {answer.text[:200]}"
    document = orjson.loads(answer.content)
    if not ("predictions" in document or "outputs" in document):
        return f"no outputs in {answer.text[:200]}"
    return None


def probe_grpc(address: str, path: str, body: bytes) -> tuple[int, str | None]:
    """(size of the answer message, None) or (0, what went wrong)."""
    import grpc

    with grpc.insecure_channel(
        address,
        options=[("grpc.max_receive_message_length", 1 << 30), ("grpc.max_send_message_length", 1 << 30)],
    ) as channel:
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        try:
            answer: bytes = call(body[5:], timeout=60)
        except grpc.RpcError as exc:
            return 0, f"{exc.code().name}: {exc.details()}"
    return len(answer), None


def run_wrk(url: str, body: Path, concurrency: int, duration: float, scripts: Path) -> dict[str, Any]:
    script = scripts / f"{body.stem}.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    argv = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{duration:g}s",
        "--timeout",
        "60s",
        "--latency",
        "-s",
        str(script),
    ]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    requests = int(_find(r"(\d+) requests in", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
    return {
        "requests": requests,
        "ok": requests - (int(non2xx.group(1)) if non2xx else 0),
        "rps": float(_find(r"Requests/sec:\s+(\S+)", out)),
        "p50_ms": _ms(_find(r"\s50%\s+(\S+)", out)),
        "p99_ms": _ms(_find(r"\s99%\s+(\S+)", out)),
        "errors": errors,
    }


def run_h2load(
    url: str, body: Path, concurrency: int, duration: float, answer_size: int, log: Path
) -> dict[str, Any]:
    argv = [
        "h2load", "-t1", f"-c{concurrency}", "-m1", "-d", str(body), "-H", "content-type: application/grpc",
        "-H", "te: trailers", f"-D{duration:g}", "--warm-up-time=1", f"--log-file={log}", url,
    ]  # fmt: skip
    log.unlink(missing_ok=True)  # h2load appends
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    status = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    assert status is not None, out
    done, succeeded = int(status.group(1)), int(status.group(2))
    data = int(_find(r"traffic: .*? total, .*? headers .*?, \S+ \((\d+)\) data", out))
    answered = data // (answer_size + 5)  # answers that carried a message of the probe's size
    errors = done - succeeded + max(0, succeeded - answered)
    rows = [line.split("\t") for line in log.read_text().splitlines() if line]
    latencies = np.array([int(r[2]) for r in rows if r[1] == "200"], dtype=np.float64) / 1000.0
    return {
        "requests": done,
        "ok": done - errors,
        "rps": float(_find(r"finished in .*?, ([\d.]+) req/s", out)),
        "p50_ms": float(np.percentile(latencies, 50)) if latencies.size else float("nan"),
        "p99_ms": float(np.percentile(latencies, 99)) if latencies.size else float("nan"),
        "errors": errors,
        "logged": len(rows),
    }


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"{pattern!r} not in load generator output:\n{text}")
    return match.group(1)


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]
