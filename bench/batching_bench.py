"""Batching's effect: the 784-512-10 MLP over gRPC Predict (tensor_content inputs, one row per request) at
several concurrencies, with and without `--enable_batching`, against raw in-process TensorFlow.

For each server configuration (batching off; batching on with the file below) the real server runs as a
subprocess on loopback and bench/loadgen.py drives it (closed loop, one row per request). The mean batch size
comes from the server's own `aspired_batch_size` histogram (Prometheus page, read before and after each run).
Then, in this process, the same SavedModel is loaded the way the server loads it (`svc.servables.saved_model.load`) and
`Servable.run` is timed at that mean batch size (rounded) on as many threads as the machine has CPUs: the
ratio server rows/s ÷ raw rows/s says how much of TensorFlow's throughput at that batch size the server
delivers. Raw results go to bench/out/batching.json; the table replaces the "Batching" section of
bench/RESULTS.md (between its markers) or is appended to it.

    python bench/batching_bench.py [--duration 10] [--concurrency 1,16,64] [--runs 1]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from results_md import write_section

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
MODEL = "mlp"
MODEL_DIR = OUT / "models" / MODEL
PY = sys.executable
CPUS = os.cpu_count() or 1

# Batching on: TF Serving's defaults made explicit, threads = CPUs, no batch timeout (a batch closes as soon
# as a thread is free, so batches grow exactly as much as the load makes requests wait).
BATCHING = f"""max_batch_size {{ value: 128 }}
batch_timeout_micros {{ value: 0 }}
max_enqueued_batches {{ value: 1000 }}
num_batch_threads {{ value: {CPUS} }}
"""
MONITORING = 'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def export_model(hidden: int) -> None:
    if (MODEL_DIR / "1" / "saved_model.pb").exists():
        return
    subprocess.run(
        [
            PY,
            str(REPO / "examples" / "export_mlp.py"),
            f"--output_dir={MODEL_DIR}",
            "--model_version=1",
            f"--hidden={hidden}",
        ],
        cwd=REPO,
        check=True,
    )


class Server:
    """`python -m svc` serving the MLP, with the Prometheus page on its REST port."""

    def __init__(self, name: str, batching: bool) -> None:
        self.name = name
        self.grpc_port, self.rest_port = free_port(), free_port()
        conf = OUT / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "monitoring.config").write_text(MONITORING)
        argv = [
            PY,
            "-m",
            "svc",
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            f"--model_name={MODEL}",
            f"--model_base_path={MODEL_DIR}",
            f"--monitoring_config_file={conf / 'monitoring.config'}",
            "--request_log_sample_rate=0",  # no per-request log line: measure serving, not logging
            "--file_system_poll_wait_seconds=0",
        ]
        if batching:
            (conf / "batching.config").write_text(BATCHING)
            argv += ["--enable_batching", f"--batching_parameters_file={conf / 'batching.config'}"]
        self.log = OUT / "logs" / f"batching_{name}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(argv, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
        self._wait_ready(120)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} server exited:\n{self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if "AVAILABLE" in httpx.get(f"http://127.0.0.1:{self.rest_port}/v1/models/{MODEL}").text:
                    return
            time.sleep(0.25)
        raise SystemExit(f"{self.name} server not ready after {timeout} s")

    def batch_histogram(self) -> tuple[float, float]:
        """(sum of rows, number of batches) of `aspired_batch_size` so far."""
        text = httpx.get(f"http://127.0.0.1:{self.rest_port}/monitoring/prometheus/metrics").text
        total = count = 0.0
        for line in text.splitlines():
            if m := re.match(r"aspired_batch_size_(sum|count)\{[^}]*\} (\S+)", line):
                if m.group(1) == "sum":
                    total += float(m.group(2))
                else:
                    count += float(m.group(2))
        return total, count

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def serving(name: str, batching: bool) -> Iterator[Server]:
    server = Server(name, batching)
    try:
        yield server
    finally:
        server.stop()


def loadgen(server: Server, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    argv = [
        PY,
        str(BENCH / "loadgen.py"),
        "--target=grpc",
        f"--addr=127.0.0.1:{server.grpc_port}",
        f"--model={MODEL}",
        "--payload=mlp",
        "--batch=1",
        "--tensor_content",
        f"--concurrency={concurrency}",
        f"--duration={duration}",
        f"--warmup={warmup}",
        "--timeout=30",
    ]
    before = server.batch_histogram()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    after = server.batch_histogram()
    if done.returncode != 0:
        raise SystemExit(f"loadgen failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    rows, batches = after[0] - before[0], after[1] - before[1]
    result["mean_batch_size"] = round(rows / batches, 2) if batches else None
    return result


class Raw:
    """The MLP loaded in this process as the server loads it; `Servable.run` timed per batch size."""

    def __init__(self) -> None:
        from svc.servables.saved_model import load

        self.servable = load(MODEL, 1, str(MODEL_DIR / "1"), ["serve"])
        self.fetches = sorted(o.name for o in self.servable.signatures["serving_default"].outputs.values())
        self.cache: dict[int, float] = {}

    def rows_per_second(self, batch: int, seconds: float = 3.0) -> float:
        """Rows/s of back-to-back runs at `batch` rows on CPUS threads (the server's batch threads)."""
        if batch in self.cache:
            return self.cache[batch]
        feeds = {"images:0": np.random.default_rng(1).random((batch, 784), dtype=np.float32)}
        for _ in range(20):
            self.servable.run(feeds, self.fetches)
        counts = [0] * CPUS
        stop = time.perf_counter() + seconds

        def work(i: int) -> None:
            while time.perf_counter() < stop:
                self.servable.run(feeds, self.fetches)
                counts[i] += 1

        started = time.perf_counter()
        threads = [threading.Thread(target=work, args=(i,)) for i in range(CPUS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.cache[batch] = sum(counts) * batch / (time.perf_counter() - started)
        return self.cache[batch]


def batcher_rate(raw: Raw, batching: bool, concurrency: int, seconds: float = 3.0) -> tuple[float, float]:
    """Requests/s and mean batch size of `svc.batching.scheduler.Batcher` alone (no network, no protobuf), in process,
    with the server's policy: where the server's time goes between the wire and TensorFlow."""
    import anyio

    from svc.batching.batch_util import BatchingPolicy
    from svc.batching.scheduler import Batcher

    policy = (
        BatchingPolicy(CPUS, enabled=True, max_batch_size=128, max_enqueued_batches=1000)
        if batching
        else BatchingPolicy(4 * CPUS)
    )
    feeds = {"images:0": np.random.default_rng(2).random((1, 784), dtype=np.float32)}
    batcher = Batcher(policy)
    done = 0

    async def run_all() -> None:
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < end:
                await batcher.submit(raw.servable, feeds, raw.fetches)
                done += 1

        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)

    started = time.perf_counter()
    anyio.run(run_all)
    return done / (time.perf_counter() - started), batcher.statistics().mean_batch_size


def begin_marker(variant: str) -> str:
    return f"<!-- batching_bench{':' + variant if variant else ''}: begin -->"


def end_marker(variant: str) -> str:
    return f"<!-- batching_bench{':' + variant if variant else ''}: end -->"


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    title = "## Batching: the 784-512-10 MLP over gRPC" + (f" ({args.variant})" if args.variant else "")
    setup = (
        f"`python bench/batching_bench.py --duration {args.duration:g} --runs {args.runs}` on "
        f"{dt.date.today().isoformat()}, {platform.machine()} with {CPUS} CPUs, Python "
        f"{platform.python_version()}; server and load generator share the machine. Each request is one row "
        "(`images` [1, 784] float32 as `tensor_content`), closed loop; median of the runs. Batching on: "
        f"max_batch_size 128, batch_timeout_micros 0, max_enqueued_batches 1000, num_batch_threads {CPUS}; "
        f"off: {4 * CPUS} inference threads. Mean batch size from the server's `aspired_batch_size` histogram. "
        f"Raw TF = `Servable.run` in process on {CPUS} threads at that mean batch size (rounded), rows/s; "
        "ratio = server rows/s / raw rows/s. Batcher alone = `svc.batching.scheduler.Batcher.submit` in process (no "
        "network, no protobuf) with the same policy and concurrency."
    )
    lines = [
        begin_marker(args.variant),
        title,
        "",
        setup,
        "",
        (
            "| batching | concurrency | rps | p50 ms | p99 ms | mean batch | raw TF rows/s at that batch | ratio "
            "| batcher alone req/s (mean batch) |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['batching']} | {r['concurrency']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
        f"{r['mean_batch_size']:.2f} | {r['raw_rows_per_s']:.0f} | {r['ratio']:.3f} | "
        f"{r['batcher_alone_rps']:.0f} ({r['batcher_alone_batch']:.1f}) |"
        for r in rows
    ]
    curve = ", ".join(f"{b}: {v:.0f}" for b, v in sorted(args.raw_curve.items()))
    lines += ["", f"Raw TF rows/s by batch size, same run: {curve}"]
    if args.note:
        lines += ["", args.note]
    lines.append(end_marker(args.variant))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--no-results", action="store_true", help="do not touch bench/RESULTS.md")
    parser.add_argument("--variant", default="", help="names this run's section of bench/RESULTS.md")
    parser.add_argument("--note", default="", help="a paragraph written under the table")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    export_model(args.hidden)
    measured: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(args.runs):
        for name, batching in (("off", False), ("on", True)):
            with serving(name, batching) as server:
                for c in concurrencies:
                    result = loadgen(server, c, args.duration, args.warmup)
                    print(f"batching {name} c={c}: {json.dumps(result)}", flush=True)
                    measured.setdefault((name, c), []).append(result)

    raw = Raw()
    rows = []
    for (name, c), results in measured.items():
        median = sorted(results, key=lambda r: r["rps"])[len(results) // 2]
        mean_batch = statistics.median(r["mean_batch_size"] or 1.0 for r in results)
        raw_rate = raw.rows_per_second(max(1, round(mean_batch)))
        alone, alone_batch = batcher_rate(raw, name == "on", c)
        rows.append(
            {
                "batching": name,
                "concurrency": c,
                "rps": median["rps"],
                "p50_ms": median["p50_ms"],
                "p99_ms": median["p99_ms"],
                "errors": median["errors"],
                "mean_batch_size": mean_batch,
                "raw_rows_per_s": raw_rate,
                "ratio": median["rps"] / raw_rate,
                "batcher_alone_rps": alone,
                "batcher_alone_batch": alone_batch,
            }
        )
    for b in (1, 2, 4, 8, 16, 32, 64):
        raw.rows_per_second(b)
    args.raw_curve = dict(raw.cache)
    OUT.mkdir(parents=True, exist_ok=True)
    runs = {f"{name}-{c}": results for (name, c), results in measured.items()}
    name = f"batching{'-' + args.variant if args.variant else ''}.json"
    (OUT / name).write_text(json.dumps({"rows": rows, "raw": raw.cache, "runs": runs}, indent=1))
    lines = table(rows, args)
    print("\n".join(lines))
    if not args.no_results:
        write_section(begin_marker(args.variant), end_marker(args.variant), "\n".join(lines))


if __name__ == "__main__":
    main()
