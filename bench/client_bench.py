"""aspired-client against the official client (issue 14): import time, and client CPU per Predict.

- Import time: `import aspired_client` in a venv holding only aspired-client (built from clients/python as
  the tests build it, under build/client-venv/), against what the official client needs to build a
  request (`import tensorflow` + `tensorflow_serving.apis.prediction_service_pb2_grpc`), each in a fresh
  interpreter, interleaved, median of the runs.
- Client CPU: a Predict of one [1, 784] float32 array over gRPC (grpcio, one channel) against
  bench/echo_server.py (`--response=mlp`: a fixed [1, 10] float + [1] int64 answer), so the server's cost
  does not matter. Official: `tf.make_tensor_proto` + `PredictionServiceStub.Predict` + `tf.make_ndarray`
  of each output; aspired-client: `Client.predict` (numpy in, numpy out). Each round runs in a fresh
  process: warm-up calls, then N calls, `time.process_time()` (all threads of the client process) per call;
  rounds alternate between the two clients; medians of the rounds.

    python bench/client_bench.py [--rounds=5] [--calls=2000]

Prints a Markdown section for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.client.conftest import VENV_CACHE, build_client_venv, source_digest
from tests.e2e.server import free_port

IMPORT = (
    "import time; t, c = time.perf_counter(), time.process_time(); {}; "
    "print(time.perf_counter() - t, time.process_time() - c)"
)
IMPORT_OURS = IMPORT.format("import aspired_client")
IMPORT_OFFICIAL = IMPORT.format("import tensorflow, tensorflow_serving.apis.prediction_service_pb2_grpc")
CALLS_OURS = """
import json, sys, time
import numpy as np
from aspired_client import Client
target, calls = sys.argv[1], int(sys.argv[2])
x = np.random.default_rng(0).random((1, 784), dtype=np.float32)
with Client(target, timeout=30) as client:
    for _ in range(200):
        client.predict("mlp", {"x": x})
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        out = client.predict("mlp", {"x": x})
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
assert out["scores"].shape == (1, 10)
print(json.dumps({"cpu_us": cpu / calls * 1e6, "wall_us": wall / calls * 1e6}))
"""
CALLS_OFFICIAL = """
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
target, calls = sys.argv[1], int(sys.argv[2])
x = np.random.default_rng(0).random((1, 784), dtype=np.float32)
options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
with grpc.insecure_channel(target, options=options) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    def predict():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mlp"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
        response = stub.Predict(request, timeout=30)
        return {alias: tf.make_ndarray(tensor) for alias, tensor in response.outputs.items()}
    for _ in range(200):
        predict()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        out = predict()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
assert out["scores"].shape == (1, 10)
print(json.dumps({"cpu_us": cpu / calls * 1e6, "wall_us": wall / calls * 1e6}))
"""


def run_python(python: Path | str, code: str, *args: str) -> str:
    done = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    ours = build_client_venv(VENV_CACHE / source_digest())

    load_before = os.getloadavg()[0]
    imports: dict[str, list[list[float]]] = {"aspired-client": [], "official": []}
    for _ in range(args.rounds):
        imports["aspired-client"].append([float(v) for v in run_python(ours, IMPORT_OURS).split()])
        imports["official"].append([float(v) for v in run_python(sys.executable, IMPORT_OFFICIAL).split()])

    grpc_port, rest_port = free_port(), free_port()
    echo = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "echo_server.py"), f"--port={grpc_port}",
         f"--rest_api_port={rest_port}", "--response=mlp"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert echo.stdout is not None
        for line in echo.stdout:  # "echo server: ..." once it listens
            if line.startswith("echo server:"):
                break
        target = f"127.0.0.1:{grpc_port}"
        calls: dict[str, list[dict[str, float]]] = {"aspired-client": [], "official": []}
        for _ in range(args.rounds):
            calls["aspired-client"].append(json.loads(run_python(ours, CALLS_OURS, target, str(args.calls))))
            calls["official"].append(json.loads(run_python(sys.executable, CALLS_OFFICIAL, target, str(args.calls))))
    finally:
        echo.terminate()
        echo.wait()

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    ratio = statistics.median(
        a["cpu_us"] / b["cpu_us"] for a, b in zip(calls["aspired-client"], calls["official"], strict=True)
    )
    print("## Client: aspired-client against the official client (`bench/client_bench.py`)\n")
    print(f"- Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.rounds} rounds, {args.calls} calls per round, medians; 1-minute load average before / after: "
          f"{load_before:.2f} / {os.getloadavg()[0]:.2f}.")  # fmt: skip
    print("\n| | import wall (s) | import CPU (s) | client CPU per Predict [1,784] f32 (µs) | wall per Predict (µs) |")
    print("|---|---:|---:|---:|---:|")
    for name in ("aspired-client", "official"):
        wall, cpu = (statistics.median(row[i] for row in imports[name]) for i in (0, 1))
        print(f"| {name} | {wall:.3f} | {cpu:.3f} | {median(calls[name], 'cpu_us'):.0f} | "
              f"{median(calls[name], 'wall_us'):.0f} |")  # fmt: skip
    print(f"\naspired-client / official client CPU per call (median of per-round ratios): {ratio:.2f}")


if __name__ == "__main__":
    main()
