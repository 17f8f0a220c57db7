"""Latency during a hot swap against steady latency, measured in the same run.

A server serves the 784-512-10 MLP (examples/export_mlp.py) from a local base path with a 1 s poll. A gRPC
closed-loop load (official client over grpc.aio, `--concurrency` workers) runs throughout. Each round
measures a steady window, then copies a new version directory in (as users publish: `cp -r` next to the old
one) and measures from the copy until the new version is AVAILABLE and the old one END, plus a second. The
load never stops, so the swap window contains the discovery, the load on the loader thread, the warm
switch and the unload. Reports p50/p99 of each window, the median over rounds, and failed requests.

    python bench/swap_bench.py [--rounds 3] [--concurrency 8] [--steady 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from results_md import write_section

from tests.e2e.server import ServerProcess


def export(base: Path, version: int) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "examples" / "export_mlp.py"), f"--output_dir={base}",
         f"--model_version={version}"], check=True, capture_output=True,
    )


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


async def load(target: str, concurrency: int, stop: asyncio.Event, samples: list[tuple[float, float, bool]]) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mlp"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.random.default_rng(0).random((1, 784), np.float32)))
    async with grpc.aio.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        async def worker() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                ok = True
                try:
                    await stub.Predict(request, timeout=30)
                except grpc.aio.AioRpcError:
                    ok = False
                samples.append((started, time.perf_counter() - started, ok))

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def states(server: ServerProcess) -> dict[str, str]:
    body = httpx.get(f"{server.rest_url}/v1/models/mlp", timeout=10).json()
    return {s["version"]: s["state"] for s in body["model_version_status"]}


def wait_for_states(server: ServerProcess, wanted: dict[str, str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while states(server) != wanted:
        if time.monotonic() > deadline:
            raise TimeoutError(f"never reached {wanted}")
        time.sleep(0.05)


async def run(rounds: int, concurrency: int, steady: float) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="swap-bench-"))
    staging, served = work / "staging", work / "mlp"
    for version in range(1, rounds + 2):
        export(staging, version)
    shutil.copytree(staging / "1", served / "1")
    server = ServerProcess(["--model_name=mlp", f"--model_base_path={served}", "--file_system_poll_wait_seconds=1"])
    server.start()
    samples: list[tuple[float, float, bool]] = []
    stop = asyncio.Event()
    loader = asyncio.create_task(load(server.grpc_target, concurrency, stop, samples))
    windows: list[dict[str, float]] = []
    try:
        await asyncio.sleep(2.0)  # warm-up, not measured
        for version in range(2, rounds + 2):
            t0 = time.perf_counter()
            await asyncio.sleep(steady)
            t1 = time.perf_counter()
            await asyncio.to_thread(shutil.copytree, staging / str(version), served / str(version))
            wanted = {str(v): ("AVAILABLE" if v == version else "END") for v in range(1, version + 1)}
            await asyncio.to_thread(wait_for_states, server, wanted)
            swapped = time.perf_counter()
            await asyncio.sleep(1.0)
            t2 = time.perf_counter()
            steady_lat = [d * 1000 for s, d, ok in samples if t0 <= s < t1 and ok]
            swap_lat = [d * 1000 for s, d, ok in samples if t1 <= s < t2 and ok]
            windows.append({
                "steady_p50": percentile(steady_lat, 50), "steady_p99": percentile(steady_lat, 99),
                "swap_p50": percentile(swap_lat, 50), "swap_p99": percentile(swap_lat, 99),
                "swap_max": max(swap_lat), "swap_seconds": swapped - t1,
                "steady_n": len(steady_lat), "swap_n": len(swap_lat),
            })
    finally:
        stop.set()
        await loader
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    failed = sum(1 for _, _, ok in samples if not ok)
    median = {k: statistics.median(w[k] for w in windows) for k in windows[0]}
    return {"rounds": windows, "median": median, "failed": failed, "requests": len(samples),
            "concurrency": concurrency, "cpus": os.cpu_count()}


BEGIN, END = "<!-- swap_bench: begin -->", "<!-- swap_bench: end -->"


def section(result: dict[str, Any], args: argparse.Namespace) -> str:
    rows = result["rounds"]
    lines = [
        BEGIN,
        "## Latency during a hot swap (784-512-10 MLP, gRPC)",
        "",
        (f"`python bench/swap_bench.py --rounds {args.rounds} --concurrency {args.concurrency} --steady "
        f"{args.steady}` on {time.strftime('%Y-%m-%d')}, {result['cpus']} CPUs shared by server and load. "
        f"A closed loop of {args.concurrency} gRPC clients runs throughout; each round measures {args.steady:g} s "
        "of steady load, then copies a new version directory in and measures from the copy until the new "
        "version is AVAILABLE and the old one END, plus 1 s (discovery, load on the loader thread, swap, unload)."),
        "",
        "| round | steady p50 ms | steady p99 ms | swap p50 ms | swap p99 ms | swap max ms | swap window s |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, start=1):
        lines.append(
            f"| {i} | {r['steady_p50']:.1f} | {r['steady_p99']:.1f} | {r['swap_p50']:.1f} | {r['swap_p99']:.1f} "
            f"| {r['swap_max']:.1f} | {r['swap_seconds']:.1f} |"
        )
    m = result["median"]
    lines += [
        (f"| median | {m['steady_p50']:.1f} | {m['steady_p99']:.1f} | {m['swap_p50']:.1f} | {m['swap_p99']:.1f} "
        f"| {m['swap_max']:.1f} | {m['swap_seconds']:.1f} |"),
        "",
        (f"Swap p99 / steady p99 (medians): {m['swap_p99'] / m['steady_p99']:.2f}. Failed requests: "
        f"{result['failed']} of {result['requests']}."),
        END,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--steady", type=float, default=6.0)
    parser.add_argument("--no-results", action="store_true", help="do not touch bench/RESULTS.md")
    args = parser.parse_args()
    result = asyncio.run(run(args.rounds, args.concurrency, args.steady))
    print(json.dumps(result, indent=1))
    if not args.no_results:
        write_section(BEGIN, END, section(result, args))


if __name__ == "__main__":
    main()
