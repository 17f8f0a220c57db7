"""Server CPU per small request (issue 11): microseconds of server CPU (user + system, from /proc/<pid>/stat,
owner and any worker processes) per completed request, and requests/s, side by side with a baseline revision.

Cases: gRPC Predict of the 784-512-10 MLP, one [1,784] row as `tensor_content`, batching on, h2load at
`--connections` connections (one stream each); REST predict of the same row (`instances`), wrk at the same
number of connections; gRPC Predict of half_plus_two ([3,1] `float_val`), batching off. The server from this
tree and from `--baseline REF` (unpacked with `git archive` under bench/out/) run one after the other in every
repetition, on the same machine, and the table gives the medians and the median of the per-repetition ratios.
CPU time is robust to a noisy box where requests/s is not: other processes slow both alike but do not add to
the server's own CPU time. The table replaces the "Server CPU per request" section of bench/RESULTS.md.

    python bench/cpu_bench.py [--baseline c7b7015] [--duration 8] [--runs 3] [--connections 64]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from batching_bench import BATCHING, MODEL, MODEL_DIR, OUT, REPO, export_model, free_port
from json_bench import MODEL_DIR as HALF_DIR
from json_bench import export_model as export_half
from json_bench import export_revision
from results_md import write_section

PY = sys.executable
BEGIN, END = "<!-- cpu_bench: begin -->", "<!-- cpu_bench: end -->"
TICK = os.sysconf("SC_CLK_TCK")


def grpc_frame(request: Any) -> bytes:
    message = request.SerializeToString()
    return b"\x00" + struct.pack(">I", len(message)) + message


def request_files() -> dict[str, Path]:
    from tensorflow_serving.apis import predict_pb2

    row = np.random.default_rng(7).random((1, 784), dtype=np.float32)
    files = {"mlp.json": json.dumps({"instances": np.round(row, 4).tolist()}).encode()}
    mlp = predict_pb2.PredictRequest()
    mlp.model_spec.name = MODEL
    tensor = mlp.inputs["images"]
    tensor.dtype = 1  # DT_FLOAT
    tensor.tensor_shape.dim.add().size = 1
    tensor.tensor_shape.dim.add().size = 784
    tensor.tensor_content = row.tobytes()
    files["mlp.bin"] = grpc_frame(mlp)
    half = predict_pb2.PredictRequest()
    half.model_spec.name = "half_plus_two"
    x = half.inputs["x"]
    x.dtype = 1
    x.tensor_shape.dim.add().size = 3
    x.tensor_shape.dim.add().size = 1
    x.float_val.extend([1.0, 2.0, 5.0])
    files["half.bin"] = grpc_frame(half)
    paths = {}
    for name, data in files.items():
        path = OUT / f"cpu_{name}"
        path.write_bytes(data)
        paths[name] = path
    return paths


class Server:
    def __init__(self, name: str, tree: Path, model: str, model_dir: Path, batching: bool) -> None:
        path = str(tree)
        tree = Path(path.split(os.pathsep)[0])
        self.name = name
        self.model = model
        self.grpc_port, self.rest_port = free_port(), free_port()
        conf = OUT / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        argv = [
            PY, "-m", "svc", f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
            f"--model_name={model}", f"--model_base_path={model_dir}", "--file_system_poll_wait_seconds=0",
        ]  # fmt: skip
        if batching:
            (conf / "batching.config").write_text(BATCHING)
            argv += ["--enable_batching", f"--batching_parameters_file={conf / 'batching.config'}"]
        self.log = OUT / "logs" / f"cpu_{name.replace(' ', '_')}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": path}
        with self.log.open("wb") as sink:
            # request_finished lines are written (the default sample rate), to a file: logging is part of it
            self.process = subprocess.Popen(argv, cwd=tree, env=env, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{name} exited:\n{self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if "AVAILABLE" in httpx.get(f"http://127.0.0.1:{self.rest_port}/v1/models/{model}").text:
                    return
            time.sleep(0.25)
        raise SystemExit(f"{name} not ready")

    def cpu_seconds(self) -> float:
        total = 0.0
        pids = [self.process.pid]
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
            pids += [int(c) for c in children]
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
        return total

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def load(server: Server, api: str, body: Path, connections: int, duration: int) -> dict[str, float]:
    if api == "rest":
        script = OUT / f"cpu_{body.stem}.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = io.open({str(body)!r}):read('*a')\n"
        )
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/{server.model}:predict"
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", str(script), url]
        subprocess.run([*argv[:3], "-d1s", *argv[4:]], capture_output=True, check=True)  # warm-up
        cpu = server.cpu_seconds()
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        cpu = server.cpu_seconds() - cpu
        total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        failed = int(non2xx.group(1)) if non2xx else 0
        rps = float(re.search(r"Requests/sec:\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    else:
        url = f"http://127.0.0.1:{server.grpc_port}/tensorflow.serving.PredictionService/Predict"
        argv = ["h2load", "-t1", f"-c{connections}", "-m1", "-d", str(body),
                "-H", "content-type: application/grpc", "-H", "te: trailers"]  # fmt: skip
        subprocess.run([*argv, "-n", str(connections * 20), url], capture_output=True, check=True)  # warm-up
        cpu = server.cpu_seconds()
        out = subprocess.run([*argv, f"-D{duration}", url], capture_output=True, text=True, check=True).stdout
        cpu = server.cpu_seconds() - cpu
        status = re.search(
            r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out
        )
        assert status is not None, out
        total, failed = int(status.group(1)), int(status.group(3))
        rps = float(re.search(r"finished in .*?, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "cpu_us": cpu / max(total, 1) * 1e6, "failed": failed}


CASES = [  # (label, model, batching, api, body)
    ("gRPC MLP, batching on", "mlp", True, "grpc", "mlp.bin"),
    ("REST MLP, batching on", "mlp", True, "rest", "mlp.json"),
    ("gRPC half_plus_two, batching off", "half", False, "grpc", "half.bin"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="c7b7015")
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--extra-path", default="", help="added to this tree's PYTHONPATH (e.g. a uvloop install)"
    )
    parser.add_argument(
        "--same-tree", action="store_true", help="the baseline is this tree (with --extra-path)"
    )
    args = parser.parse_args()
    for tool in ("wrk", "h2load"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (apt-get install wrk nghttp2-client)")
    OUT.mkdir(parents=True, exist_ok=True)
    export_model(512)
    export_half()
    files = request_files()
    here = f"{REPO}{os.pathsep}{args.extra_path}" if args.extra_path else str(REPO)
    base = REPO if args.same_tree else export_revision(args.baseline)
    trees = {"aspired": Path(here), f"baseline {'this tree' if args.same_tree else args.baseline}": base}
    models = {"mlp": (MODEL, MODEL_DIR), "half": ("half_plus_two", HALF_DIR)}
    load_before = os.getloadavg()[0]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(args.runs):
        for model_key, batching in (("mlp", True), ("half", False)):
            for name, tree in trees.items():
                model, model_dir = models[model_key]
                server = Server(name, tree, model, model_dir, batching)
                try:
                    for label, key, on, api, body in CASES:
                        if key == model_key and on == batching:
                            result = load(server, api, files[body], args.connections, args.duration)
                            results.setdefault((label, name), []).append(result)
                            print(label, name, json.dumps(result), flush=True)
                finally:
                    server.stop()
    names = list(trees)
    lines = [
        BEGIN,
        "## Server CPU per request",
        "",
        (
            f"`python bench/cpu_bench.py --baseline {args.baseline} --duration {args.duration} --runs {args.runs} "
            f"--connections {args.connections}` on {dt.date.today()}, {platform.machine()} with {os.cpu_count()} CPUs "
            f"shared by the servers, the load generators and other sessions (load average {load_before:.1f} before,"
            f" {os.getloadavg()[0]:.1f} after). Server CPU = user + system time of the server process(es) from "
            "/proc over the measured run, per completed request; request_finished lines written (default sample "
            "rate) to a file. h2load (gRPC, one stream per connection) and wrk (REST), one thread each; servers "
            "from both trees interleaved; medians, ratio = median of per-run ratios (aspired / baseline)."
        ),
        "",
        "| case | " + " | ".join(f"{n} µs CPU/req | {n} rps" for n in names) + " | CPU ratio | rps ratio |",
        "|---|" + "---:|---:|" * len(names) + "---:|---:|",
    ]
    for label, *_ in CASES:
        cells = [label]
        for name in names:
            runs = results[(label, name)]
            cells += [
                f"{statistics.median(r['cpu_us'] for r in runs):.0f}",
                f"{statistics.median(r['rps'] for r in runs):.0f}",
            ]
        ours, base = results[(label, names[0])], results[(label, names[1])]
        cells.append(
            f"{statistics.median(a['cpu_us'] / b['cpu_us'] for a, b in zip(ours, base, strict=True)):.2f}"
        )
        cells.append(f"{statistics.median(a['rps'] / b['rps'] for a, b in zip(ours, base, strict=True)):.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    failed = sum(r["failed"] for runs in results.values() for r in runs)
    lines += ["", f"Failed requests (load generators): {failed:.0f}.", END]
    print("\n".join(lines))
    if not args.no_write:
        write_section(BEGIN, END, "\n".join(lines))


if __name__ == "__main__":
    main()
