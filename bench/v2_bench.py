"""The Open Inference Protocol against TF Serving's Predict on the same server and model (issue 12): the
784-512-10 MLP, one row per request, closed loop at one concurrency, in one run:

- gRPC Predict with `tensor_content` (the reference),
- V2 gRPC ModelInfer with `raw_input_contents` (raw outputs back),
- V2 REST infer with the binary tensor data extension (binary input, binary outputs),
- TF Serving REST `:predict` JSON, for scale.

One server (no batching, request log off) serves all four; bench/loadgen.py drives each in turn, the order
rotated every repetition (interleaved), and the table gives the median of the repetitions and each target's
ratio to Predict in the same repetition (median). Raw results go to bench/out/v2.json; the table replaces the
"v2_bench" section of bench/RESULTS.md (between its markers) or is appended to it.

    python bench/v2_bench.py [--duration 8] [--concurrency 16] [--runs 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
from typing import Any

from batching_bench import BENCH, CPUS, MODEL, OUT, PY, REPO, export_model, serving
from results_md import write_section

TARGETS = {
    "grpc": ("TF Serving gRPC Predict, tensor_content", ["--target=grpc", "--tensor_content"]),
    "v2grpc": ("V2 gRPC ModelInfer, raw_input_contents", ["--target=v2grpc"]),
    "v2rest": ("V2 REST infer, binary tensor data", ["--target=v2rest"]),
    "rest": ("TF Serving REST :predict, JSON", ["--target=rest"]),
}
BEGIN, END = "<!-- v2_bench: begin -->", "<!-- v2_bench: end -->"


def loadgen(port: int, target: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [
        PY, str(BENCH / "loadgen.py"), *TARGETS[target][1], f"--addr=127.0.0.1:{port}", f"--model={MODEL}",
        "--payload=mlp", "--batch=1", f"--concurrency={args.concurrency}", f"--duration={args.duration}",
        f"--warmup={args.warmup}", f"--processes={args.processes}", "--timeout=30",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the V2 client uses the generated svc._proto messages
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"loadgen {target} failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["errors"]:
        raise SystemExit(f"loadgen {target}: {result['errors']} errors, e.g. {result['error_sample']}")
    return result


def table(runs: list[dict[str, dict[str, Any]]], args: argparse.Namespace) -> list[str]:
    setup = (
        f"`python bench/v2_bench.py --duration {args.duration:g} --concurrency {args.concurrency} --runs "
        f"{args.runs} --processes {args.processes} --targets {args.targets}` on {dt.date.today().isoformat()}, {platform.machine()} with "
        f"{CPUS} CPUs, Python {platform.python_version()}; one server (batching off, request log off) and the "
        f"load generator ({args.processes} process(es)) share the machine. Each request is one row (`images` "
        "[1, 784] float32), closed loop; the targets run one after the other, order rotated every repetition; "
        "medians of the repetitions; ratio = the target's rps / Predict's rps in the same repetition (median)."
    )
    lines = [
        BEGIN, f"## Open Inference Protocol (V2) vs TF Serving's Predict: the MLP at c={args.concurrency}", "",
        setup, "", "| target | rps | p50 ms | p99 ms | rps ratio to Predict |", "|---|---|---|---|---|",
    ]
    for target, (label, _) in TARGETS.items():
        if target not in runs[0]:
            continue
        rps = statistics.median(r[target]["rps"] for r in runs)
        p50 = statistics.median(r[target]["p50_ms"] for r in runs)
        p99 = statistics.median(r[target]["p99_ms"] for r in runs)
        ratio = statistics.median(r[target]["rps"] / r["grpc"]["rps"] for r in runs)
        lines.append(f"| {label} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {ratio:.3f} |")
    costs = codec_costs()
    lines += [
        "",
        (
            "Per-request protocol work in the server (parse + decode the request, build + serialize the answer; "
            f"no TensorFlow run), in process, best of 5: Predict {costs['predict']:.1f} µs, V2 gRPC "
            f"{costs['v2']:.1f} µs."
        ),
    ]
    if args.note:
        lines += ["", args.note]
    lines.append(END)
    return lines


def codec_costs(repeat: int = 2000) -> dict[str, float]:
    """Microseconds per request of each protocol's own work in the server, in process and without TensorFlow
    running: parse the request and turn it into numpy (Predict: PredictRequest + tensor_content; V2:
    ModelInferRequest + raw_input_contents), then build and serialize the answer for the MLP's outputs
    (Predict: typed float_val/int64_val; V2: raw_output_contents)."""
    import timeit

    import numpy as np
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2

    from svc._proto.inference import grpc_service_pb2 as pb
    from svc.inference import predict as api
    from svc.wire import tensor_proto, v2_request

    row = np.random.default_rng(3).random((1, 784), dtype=np.float32)
    outputs = {"scores": np.random.default_rng(4).random((1, 10), dtype=np.float32),
               "classes": np.array([3], dtype=np.int64)}
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = MODEL
    predict.inputs["images"].CopyFrom(tensor_proto.from_ndarray(row, types_pb2.DT_FLOAT, as_content=True))
    predict_wire = predict.SerializeToString()
    v2 = pb.ModelInferRequest(model_name=MODEL, raw_input_contents=[row.tobytes()])
    v2.inputs.add(name="images", datatype="FP32", shape=row.shape)
    v2_wire = v2.SerializeToString()

    def tf_serving() -> bytes:
        request = predict_pb2.PredictRequest.FromString(predict_wire)
        tensor_proto.to_ndarray(request.inputs["images"])
        response = predict_pb2.PredictResponse()
        response.model_spec.name = MODEL
        for alias, array in outputs.items():
            response.outputs[alias].CopyFrom(api.output_tensor(array, tensor_proto.data_type_of(array), False))
        return bytes(response.SerializeToString())

    def open_inference() -> bytes:
        request = v2_request.parse_grpc_request(pb.ModelInferRequest.FromString(v2_wire))
        answer = v2_request.InferResponse(MODEL, "1", "", tuple(
            v2_request.InferOutput(alias, "FP32" if a.dtype == np.float32 else "INT64", a)
            for alias, a in outputs.items()
        ))
        return bytes(v2_request.grpc_response(answer, request.raw).SerializeToString())

    return {
        name: min(timeit.repeat(fn, number=repeat, repeat=5)) / repeat * 1e6
        for name, fn in (("predict", tf_serving), ("v2", open_inference))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset of " + ",".join(TARGETS))
    parser.add_argument("--no-results", action="store_true", help="do not touch bench/RESULTS.md")
    parser.add_argument("--note", default="", help="a paragraph written under the table")
    args = parser.parse_args()
    export_model(args.hidden)
    runs: list[dict[str, dict[str, Any]]] = []
    order = [t for t in TARGETS if t in args.targets.split(",")]
    if "grpc" not in order:
        parser.error("--targets must include grpc (the reference)")
    with serving("v2", batching=False) as server:
        for rep in range(args.runs):
            run: dict[str, dict[str, Any]] = {}
            for target in order[rep % len(order):] + order[: rep % len(order)]:
                port = server.grpc_port if target in ("grpc", "v2grpc") else server.rest_port
                run[target] = loadgen(port, target, args)
                print(target, run[target]["rps"], run[target]["p50_ms"], flush=True)
            runs.append(run)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "v2.json").write_text(json.dumps(runs, indent=1))
    lines = table(runs, args)
    print("\n".join(lines))
    if not args.no_results:
        write_section(BEGIN, END, "\n".join(lines))


if __name__ == "__main__":
    main()
