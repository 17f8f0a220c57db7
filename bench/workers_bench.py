"""`--frontend_workers`: throughput, memory and batch size of N frontend worker processes against one process,
on the 784-512-10 MLP with batching on, driven by C load generators (wrk for REST, h2load for gRPC).

For each repetition, servers with 1 and with N workers run one after the other (interleaved, so slow drifts
of a shared machine hit both alike); each serves REST (wrk, `{"instances": [[784 floats]]}`) and gRPC (h2load,
a PredictRequest of one [1,784] float32 row as `tensor_content`) for `--duration` seconds after a warm-up, at
`--connections` client connections, and gRPC once more with a single connection (one HTTP/2 connection is
served by one worker). Reported per run: requests/s, mean batch size (the server's `aspired_batch_size`
histogram), resident memory of the whole server (owner + workers: RSS and PSS, where shared pages count
once); then the median over repetitions of the N/1 ratios of each pair. Raw results: bench/out/workers.json;
the table replaces the "Frontend workers" section of bench/RESULTS.md.

    python bench/workers_bench.py [--workers 2] [--duration 10] [--runs 3] [--connections 32]
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
from batching_bench import BATCHING, MODEL, MODEL_DIR, MONITORING, OUT, REPO, export_model, free_port
from results_md import write_section

PY = sys.executable
METRICS = "/monitoring/prometheus/metrics"
BEGIN, END = "<!-- workers_bench: begin -->", "<!-- workers_bench: end -->"


def request_files() -> tuple[Path, Path]:
    """The REST body and the gRPC frame (uncompressed flag + length + PredictRequest) of one [1,784] row."""
    from tensorflow_serving.apis import predict_pb2

    row = np.random.default_rng(7).random((1, 784), dtype=np.float32)
    rest = OUT / "workers_rest.json"
    rest.write_text(json.dumps({"instances": np.round(row, 4).tolist()}))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    tensor = request.inputs["images"]
    tensor.dtype = 1  # DT_FLOAT
    tensor.tensor_shape.dim.add().size = 1
    tensor.tensor_shape.dim.add().size = 784
    tensor.tensor_content = row.tobytes()
    message = request.SerializeToString()
    grpc = OUT / "workers_grpc.bin"
    grpc.write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)
    return rest, grpc


class Server:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.grpc_port, self.rest_port = free_port(), free_port()
        conf = OUT / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "monitoring.config").write_text(MONITORING)
        (conf / "batching.config").write_text(BATCHING)
        argv = [
            PY, "-m", "svc", f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
            f"--model_name={MODEL}", f"--model_base_path={MODEL_DIR}",
            f"--monitoring_config_file={conf / 'monitoring.config'}", "--request_log_sample_rate=0",
            "--file_system_poll_wait_seconds=0", "--enable_batching",
            f"--batching_parameters_file={conf / 'batching.config'}", f"--frontend_workers={workers}",
        ]
        self.log = OUT / "logs" / f"workers_{workers}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(argv, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited:\n{self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.rest_port}/readyz").status_code == 200:
                    return
            time.sleep(0.25)
        raise SystemExit("server not ready")

    def pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [self.process.pid, *(int(c) for c in children)]

    def memory_mib(self) -> tuple[float, float]:
        """(RSS, PSS) of the owner and its workers together, MiB."""
        rss = pss = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        return rss / 1024, pss / 1024

    def cpu_seconds(self) -> float:
        """User + system CPU of the owner and its workers so far."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / tick

    def counters(self) -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{self.rest_port}{METRICS}", timeout=30).text
        out: dict[str, float] = {"rows": 0.0, "batches": 0.0}
        for line in text.splitlines():
            if m := re.match(r"aspired_batch_size_(sum|count)\{[^}]*\} (\S+)", line):
                out["rows" if m.group(1) == "sum" else "batches"] += float(m.group(2))
            elif m := re.match(r':tensorflow:serving:request_count\{[^}]*status="(\w+)"\} (\S+)', line):
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
        return out

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_load(server: Server, api: str, connections: int, duration: int, rest: Path, grpc: Path) -> dict[str, Any]:
    before, cpu_before = server.counters(), server.cpu_seconds()
    if api == "rest":
        script = OUT / "workers_post.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = io.open({str(rest)!r}):read('*a')\n"
        )
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", str(script),
                f"http://127.0.0.1:{server.rest_port}/v1/models/{MODEL}:predict"]
        subprocess.run([*argv[:3], "-d2s", *argv[4:]], capture_output=True, check=True)  # warm-up
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        rps = float(re.search(r"Requests/sec:\s+(\S+)", out).group(1))  # type: ignore[union-attr]
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        failed = int(non2xx.group(1)) if non2xx else 0
    else:
        argv = ["h2load", "-t1", f"-c{connections}", "-m1", f"-D{duration}", "--warm-up-time=2", "-d", str(grpc),
                "-H", "content-type: application/grpc", "-H", "te: trailers",
                f"http://127.0.0.1:{server.grpc_port}/tensorflow.serving.PredictionService/Predict"]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        rps = float(re.search(r"finished in .*?, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
        status = re.search(r"requests: .*? (\d+) failed, (\d+) errored", out)
        failed = int(status.group(1)) + int(status.group(2)) if status else -1
    after, cpu_after = server.counters(), server.cpu_seconds()
    batches = after["batches"] - before["batches"]
    answered = after.get("OK", 0.0) - before.get("OK", 0.0)
    rss, pss = server.memory_mib()
    return {
        "api": api, "connections": connections, "rps": rps, "failed": failed,
        "server_errors": {k: v - before.get(k, 0.0) for k, v in after.items()
                          if k not in ("rows", "batches", "OK") and v - before.get(k, 0.0)},
        "cpu_us_per_request": round((cpu_after - cpu_before) / answered * 1e6) if answered else None,
        "mean_batch": round((after["rows"] - before["rows"]) / batches, 2) if batches else None,
        "rss_mib": round(rss, 1), "pss_mib": round(pss, 1),
    }


def _errors(errors: dict[str, float]) -> str:
    return ", ".join(f"{int(v)} {k}" for k, v in sorted(errors.items())) or "0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    for tool in ("wrk", "h2load"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (apt-get install wrk nghttp2-client)")
    OUT.mkdir(parents=True, exist_ok=True)
    export_model(512)
    rest, grpc = request_files()
    load_before = os.getloadavg()[0]
    cases = [("rest", args.connections), ("grpc", args.connections), ("grpc", 1)]
    runs: list[dict[str, Any]] = []
    for rep in range(args.runs):
        for workers in (1, args.workers):
            server = Server(workers)
            try:
                for api, connections in cases:
                    result = run_load(server, api, connections, args.duration, rest, grpc)
                    result.update(workers=workers, rep=rep)
                    runs.append(result)
                    print(json.dumps(result), flush=True)
            finally:
                server.stop()
    (OUT / "workers.json").write_text(json.dumps(runs, indent=1))
    write_results(runs, args, load_before, os.getloadavg()[0])


def write_results(runs: list[dict[str, Any]], args: argparse.Namespace, load_before: float,
                  load_after: float) -> None:
    n = args.workers
    lines = [
        BEGIN,
        f"## Frontend workers: 1 vs {n} on the 784-512-10 MLP, batching on",
        "",
        (f"`python bench/workers_bench.py --workers {n} --duration {args.duration} --runs {args.runs} "
        f"--connections {args.connections}` on {dt.date.today()}, {platform.machine()} with {os.cpu_count()} "
        f"CPUs shared by the server, the load generator and other sessions' work (1-minute load average "
        f"before / after: {load_before:.2f} / {load_after:.2f}); Python {platform.python_version()}. "
        "REST: wrk (1 thread), `{\"instances\": [[784 floats]]}`; gRPC: h2load (1 thread, 1 stream per "
        "connection), one [1,784] float32 row as `tensor_content`. Servers with 1 and with N workers "
        "interleaved; memory = owner + workers after the run (RSS; PSS counts shared pages once); server CPU = "
        "user + system time of the owner and its workers (/proc) per answered request, warm-up included."),
        "",
        "| rep | API | connections | workers | rps | server CPU µs/request | mean batch | RSS MiB | PSS MiB | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['rep']} | {r['api']} | {r['connections']} | {r['workers']} | {r['rps']:.0f} "
        f"| {r['cpu_us_per_request']} | {r['mean_batch']} "
        f"| {r['rss_mib']:.0f} | {r['pss_mib']:.0f} | {r['failed']} / {_errors(r['server_errors'])} |"
        for r in runs
    ]
    lines += ["", f"Median over repetitions of the ratios {n} workers / 1 worker (pairs of the same repetition):", "",
              "| API | connections | rps ratio | CPU/request ratio | mean batch 1 → N | RSS ratio | PSS ratio |",
              "|---|---|---|---|---|---|---|"]
    for api, connections in sorted({(r["api"], r["connections"]) for r in runs}, key=lambda k: (k[0], -k[1])):
        pairs = []
        for rep in range(args.runs):
            one = [r for r in runs if r["rep"] == rep and r["workers"] == 1 and r["api"] == api
                   and r["connections"] == connections]
            many = [r for r in runs if r["rep"] == rep and r["workers"] == n and r["api"] == api
                    and r["connections"] == connections]
            if one and many:
                pairs.append((one[0], many[0]))
        if not pairs:
            continue
        rps = statistics.median(m["rps"] / o["rps"] for o, m in pairs)
        rss = statistics.median(m["rss_mib"] / o["rss_mib"] for o, m in pairs)
        pss = statistics.median(m["pss_mib"] / o["pss_mib"] for o, m in pairs)
        cpu = statistics.median(m["cpu_us_per_request"] / o["cpu_us_per_request"] for o, m in pairs
                                if m["cpu_us_per_request"] and o["cpu_us_per_request"])
        b1 = statistics.median(o["mean_batch"] or 0 for o, _ in pairs)
        bn = statistics.median(m["mean_batch"] or 0 for _, m in pairs)
        lines.append(f"| {api} | {connections} | {rps:.2f} | {cpu:.2f} | {b1:.1f} → {bn:.1f} | {rss:.2f} | {pss:.2f} |")
    lines += ["", ("(failed = the load generator's failed requests / the server's non-OK requests by status; "
              "h2load resets the streams still open when its time is up, which the server counts as CANCELLED.)"),
              END]
    write_section(BEGIN, END, "\n".join(lines))


if __name__ == "__main__":
    main()
