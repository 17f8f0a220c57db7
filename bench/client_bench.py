"""aspired-client against the official client (issue 14): import time, and client CPU per Predict.

- Import time: `import aspired_client` in a venv holding only aspired-client (built from clients/python as
  the tests build it, under build/client-venv/), against what the official client needs to build a
  request (`import tensorflow` + `tensorflow_serving.apis.prediction_service_pb2_grpc`), each in a fresh
  interpreter, interleaved, median of the runs.
- Client CPU: a Predict of one [1, 784] float32 array over gRPC (grpcio, one channel each) against
  bench/echo_server.py (`--response=mlp`: a fixed [1, 10] float + [1] int64 answer), so the server's cost
  does not matter. Official: `tf.make_tensor_proto` + `PredictionServiceStub.Predict` + `tf.make_ndarray`
  of each output; aspired-client: `Client.predict` (numpy in, numpy out). Both clients run in one process
  (the client's private messages allow it) in alternating blocks of calls (ABBA order), so that the load
  of this shared machine hits both alike; `time.process_time()` (all threads of the process) per call,
  medians of the blocks and of the per-block ratios.

    python bench/client_bench.py [--rounds=5] [--blocks=20] [--calls=500]

Prints its Markdown section and writes it into bench/RESULTS.md (between its markers; `--no-results` not).
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

from results_md import write_section

from tests.client.conftest import VENV_CACHE, build_client_venv, source_digest
from tests.e2e.server import free_port

BEGIN, END = "<!-- client_bench: begin -->", "<!-- client_bench: end -->"
IMPORT = (
    "import time; t, c = time.perf_counter(), time.process_time(); {}; "
    "print(time.perf_counter() - t, time.process_time() - c)"
)
IMPORT_OURS = IMPORT.format("import aspired_client")
IMPORT_OFFICIAL = IMPORT.format("import tensorflow, tensorflow_serving.apis.prediction_service_pb2_grpc")
CALLS = """
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from aspired_client import Client
target, blocks, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
x = np.random.default_rng(0).random((1, 784), dtype=np.float32)
options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
channel = grpc.insecure_channel(target, options=options)
stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
client = Client(target, timeout=30)

def official():
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mlp"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    response = stub.Predict(request, timeout=30)
    return {alias: tf.make_ndarray(tensor) for alias, tensor in response.outputs.items()}

def ours():
    return client.predict("mlp", {"x": x})

def block(function):
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        out = function()
    assert out["scores"].shape == (1, 10)
    return {"cpu_us": (time.process_time() - cpu) / calls * 1e6, "wall_us": (time.perf_counter() - wall) / calls * 1e6}

for _ in range(300):
    official(); ours()
rows = []
for index in range(blocks):  # ABBA order: drifts in machine load hit both alike
    pair = [("aspired-client", ours), ("official", official)]
    measured = {name: block(function) for name, function in (pair if index % 2 == 0 else pair[::-1])}
    rows.append(measured)
print(json.dumps(rows))
"""


def run_python(python: Path | str, code: str, *args: str) -> str:
    done = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="fresh interpreters per import measurement")
    parser.add_argument("--calls", type=int, default=500, help="calls per block")
    parser.add_argument("--blocks", type=int, default=20, help="alternating blocks of calls per client")
    parser.add_argument("--no-results", action="store_true", help="do not touch bench/RESULTS.md")
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
        rows = json.loads(run_python(sys.executable, CALLS, target, str(args.blocks), str(args.calls)))
    finally:
        echo.terminate()
        echo.wait()
    calls = {name: [row[name] for row in rows] for name in ("aspired-client", "official")}

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    ratio = statistics.median(
        a["cpu_us"] / b["cpu_us"] for a, b in zip(calls["aspired-client"], calls["official"], strict=True)
    )
    lines = [
        BEGIN,
        "## Client: aspired-client against the official client (`bench/client_bench.py`)",
        "",
        (
            f"- Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
            f"imports: {args.rounds} rounds; predicts: {args.blocks} blocks of {args.calls} calls per client, "
            "medians; 1-minute load average before / after: "
            f"{load_before:.2f} / {os.getloadavg()[0]:.2f} (other sessions share the cores: wall times inflate, CPU "
            "times much less)."
        ),
        (
            "- Import: a fresh interpreter each; aspired-client in a venv holding only it; official = `import "
            "tensorflow, tensorflow_serving.apis.prediction_service_pb2_grpc`."
        ),
        (
            "- Predict: one [1, 784] float32 array over gRPC (grpcio, one channel each) to bench/echo_server.py "
            "(`--response=mlp`), both clients in one process, blocks alternating (ABBA); client CPU = "
            "`time.process_time()` of the process per call: build + call + numpy outputs (official: "
            "`tf.make_tensor_proto`, the stub, `tf.make_ndarray`)."
        ),
        "",
        "| | import wall (s) | import CPU (s) | client CPU per Predict (µs) | wall per Predict (µs) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("aspired-client", "official"):
        wall, cpu = (statistics.median(row[i] for row in imports[name]) for i in (0, 1))
        lines.append(
            f"| {name} | {wall:.3f} | {cpu:.3f} | {median(calls[name], 'cpu_us'):.0f} | "
            f"{median(calls[name], 'wall_us'):.0f} |"
        )
    lines += [
        "",
        f"aspired-client / official client CPU per Predict (median of per-block ratios): {ratio:.2f}",
        END,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_results:
        write_section(BEGIN, END, text)


if __name__ == "__main__":
    main()
