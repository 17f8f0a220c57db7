"""Run the benchmark scenarios and write bench/RESULTS.md.

Starts the servers as subprocesses on loopback — the echo server (bench/echo_server.py, the transport
ceiling) and the real one (`python -m svc ... --model_name=half_plus_two --model_base_path=<demo model>`),
both at once, idle while the other is measured — and runs bench/loadgen.py (a separate process) against
each: gRPC and REST Predict on half_plus_two at each concurrency. Runs are interleaved (echo, aspired, echo,
aspired, ...) so that the machine's noise falls on both sides alike; each figure is the median of `--runs`
runs. First a calibration: 1 vs 2 load generator processes against the echo server at the highest
concurrency, which decides how many processes drive the c > 1 scenarios (`--processes auto`). Last the
codec micro-benchmark (bench/codec_bench.py). Raw results go to bench/out/results.json, server logs to
bench/out/logs/.

    python bench/run_all.py [--duration 10] [--runs 3] [--servers echo,aspired] [--no-codec]

When the real server does not start (not written yet, or broken), its rows say so and the rest is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
MODEL = "half_plus_two"
DEMO_MODEL = REPO / "examples" / "models" / MODEL
PY = sys.executable


@dataclass
class Server:
    name: str
    grpc: str
    rest: str
    process: subprocess.Popen[bytes] | None
    error: str = ""


def free_port() -> int:
    # The server runs in another process, so a bound socket cannot be handed over: bind, read, close.
    # A race with another process taking the port in between is possible but harmless for a bench.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_ready(server: Server, log: Path, timeout: float) -> None:
    """Ready when GET /v1/models/half_plus_two answers 200 with AVAILABLE; sets server.error otherwise."""
    assert server.process is not None
    deadline = time.monotonic() + timeout
    url = f"http://{server.rest}/v1/models/{MODEL}"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            server.error = f"exited with code {server.process.returncode}:\n{log_tail(log)}"
            return
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(url, timeout=1.0)
            if response.status_code == 200 and "AVAILABLE" in response.text:
                return
        time.sleep(0.25)
    server.error = f"not AVAILABLE after {timeout:.0f} s:\n{log_tail(log)}"


def start_server(name: str, timeout: float, server_cmd: list[str]) -> Server:
    grpc_port, rest_port = free_port(), free_port()
    if name == "echo":
        argv = [PY, str(BENCH / "echo_server.py"), f"--port={grpc_port}", f"--rest_api_port={rest_port}"]
    else:
        argv = [
            *server_cmd,
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            f"--model_name={MODEL}",
            f"--model_base_path={DEMO_MODEL}",
        ]
    log = OUT / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
    server = Server(name, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{rest_port}", process)
    wait_ready(server, log, timeout)
    if server.error:
        stop_server(server)
    print(f"{name}: {'ready' if not server.error else 'FAILED ' + server.error}", flush=True)
    return server


def stop_server(server: Server) -> None:
    process = server.process
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def servers(names: list[str], timeout: float, server_cmd: list[str]) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for name in names:
            started[name] = start_server(name, timeout, server_cmd)
        yield started
    finally:
        for server in started.values():
            stop_server(server)


def loadgen(server: Server, target: str, concurrency: int, processes: int, duration: float) -> dict[str, Any]:
    addr = server.grpc if target == "grpc" else server.rest
    argv = [
        PY,
        str(BENCH / "loadgen.py"),
        f"--target={target}",
        f"--addr={addr}",
        f"--model={MODEL}",
        f"--concurrency={concurrency}",
        f"--duration={duration}",
        f"--processes={processes}",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120, check=False, cwd=REPO)
    if done.returncode != 0:
        print(f"  {server.name:8} {target:4} c={concurrency:<3} p={processes}  FAILED", flush=True)
        failed = done.stderr.strip()[-500:]
        return {"server": server.name, "target": target, "concurrency": concurrency, "failed": failed}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["server"] = server.name
    if result["count"] == 0:  # every call failed: no latency to report
        print(f"  {server.name:8} {target:4} c={concurrency:<3} p={processes}  ALL FAILED", flush=True)
        result["failed"] = result["error_sample"]
        return result
    result["loadavg"] = os.getloadavg()[0]
    print(
        f"  {server.name:8} {target:4} c={concurrency:<3} p={processes}  rps={result['rps']:8.1f}  "
        f"p50={result['p50_ms']:7.2f} ms  p99={result['p99_ms']:7.2f} ms  errors={result['errors']}",
        flush=True,
    )
    return result


def median_of(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if "failed" not in r]
    return statistics.median(values) if values else None


def errors_of(results: list[dict[str, Any]]) -> str:
    """Failed calls summed over the runs, plus runs that failed outright."""
    calls = sum(r.get("errors", 0) for r in results)
    runs = sum(1 for r in results if "failed" in r)
    return f"{calls}" + (f" ({runs} runs failed)" if runs else "")


def calibrate(
    echo: Server, targets: list[str], concurrency: int, runs: int, duration: float
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """1 vs 2 load generator processes on the echo server; per target, the count with the higher median rps."""
    print(f"calibration: echo server, c={concurrency}, 1 vs 2 load generator processes", flush=True)
    raw = [
        loadgen(echo, target, concurrency, processes, duration)
        for _ in range(runs)
        for target in targets
        for processes in (1, 2)
    ]
    choice = {}
    for target in targets:
        by_p = {
            p: median_of([r for r in raw if r.get("target") == target and r.get("processes") == p], "rps")
            or 0
            for p in (1, 2)
        }
        choice[target] = 2 if by_p[2] > 1.05 * by_p[1] else 1
    return choice, raw


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = ["grpclib", "hypercorn", "starlette", "grpcio", "httpx", "protobuf", "tensorflow", "betterproto2"]
    found = []
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{name} {version(name)}")
    return ", ".join(found)


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def scenario_table(
    results: list[dict[str, Any]], targets: list[str], levels: list[int], started: dict[str, Server]
) -> list[str]:
    lines = [
        "| API | c | echo rps | echo p50 / p99 ms | aspired rps | aspired p50 / p99 ms | aspired / echo rps"
        + " | errors echo / aspired |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    aspired = started.get("aspired")
    for target in targets:
        for c in levels:
            cells: dict[str, tuple[float | None, float | None, float | None]] = {}
            errors: dict[str, str] = {}
            rps_by_run: dict[str, dict[int, float]] = {}
            for name in ("echo", "aspired"):
                rs = [
                    r
                    for r in results
                    if r.get("server") == name and r["target"] == target and r["concurrency"] == c
                ]
                cells[name] = (median_of(rs, "rps"), median_of(rs, "p50_ms"), median_of(rs, "p99_ms"))
                errors[name] = errors_of(rs) if rs else "—"
                rps_by_run[name] = {r["run"]: r["rps"] for r in rs if "failed" not in r}
            e, a = cells["echo"], cells["aspired"]
            # Ratio: median over runs of aspired / echo measured back to back, which cancels slow drifts in
            # the machine's load better than a ratio of medians.
            pairs = [
                a_run / e_run
                for run, e_run in rps_by_run["echo"].items()
                if e_run and (a_run := rps_by_run["aspired"].get(run)) is not None
            ]
            if aspired is None or aspired.error:
                a_rps, a_lat, ratio = "not run", "not run", "—"
            else:
                a_rps, a_lat = fmt(a[0]), f"{fmt(a[1], 2)} / {fmt(a[2], 2)}"
                ratio = f"{statistics.median(pairs):.2f}" if pairs else "—"
            lines.append(
                f"| {target} | {c} | {fmt(e[0])} | {fmt(e[1], 2)} / {fmt(e[2], 2)} | {a_rps} | {a_lat} | {ratio} "
                f"| {errors['echo']} / {errors['aspired']} |"
            )
    return lines


def write_results(path: Path, report: dict[str, Any]) -> None:
    args, started = report["args"], report["started"]
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `bench/run_all.py` on {report['date']}.",
        "",
        (
            f"- Machine: {report['machine']}. The load generator and the servers share these cores; other "
            "processes on the machine may add noise (1-minute load average before / after: "
            f"{report['loadavg_before']:.2f} / {report['loadavg_after']:.2f})."
        ),
        f"- Libraries: {report['versions']}.",
        (
            f"- Method: closed loop (bench/loadgen.py), {args.duration:g} s measured after 1 s of warm-up, "
            f"median of {args.runs} runs; echo and aspired runs interleaved, aspired / echo is the median of "
            "the ratios of back-to-back runs. Predict on half_plus_two, "
            "x = [[1], [2], [5]] (gRPC float_val [3,1]; REST row format). gRPC: grpcio asyncio client, one "
            "channel (one HTTP/2 connection) per load generator process; REST: httpx, one HTTP/1.1 "
            "keep-alive connection per worker."
        ),
        f"- Load generator processes: 1 at c=1; at c>1 {report['processes_desc']}.",
        (
            f"- aspired: `{report['server_cmd']} --port=P --rest_api_port=Q --model_name={MODEL} "
            f"--model_base_path=<repo>/examples/models/{MODEL}` (exported by examples/export_half_plus_two.py)."
        ),
        (
            "- echo: bench/echo_server.py, grpclib + starlette/hypercorn in one event loop returning a "
            "fixed response (request decoded, no model): the ceiling of the transport stack."
        ),
        "",
    ]
    if report["calibration"]:
        lines += [
            f"## Calibration: load generator processes (echo server, c = {max(args.concurrency)})",
            "",
            "| API | processes | rps | p50 / p99 ms |",
            "|---|---:|---:|---:|",
        ]
        for target in args.targets:
            for p in (1, 2):
                rs = [
                    r for r in report["calibration"] if r.get("target") == target and r.get("processes") == p
                ]
                lines.append(
                    f"| {target} | {p} | {fmt(median_of(rs, 'rps'))} | "
                    f"{fmt(median_of(rs, 'p50_ms'), 2)} / {fmt(median_of(rs, 'p99_ms'), 2)} |"
                )
        lines.append("")
    lines += ["## Predict, half_plus_two", ""]
    lines += scenario_table(report["results"], args.targets, args.concurrency, started)
    aspired = started.get("aspired")
    if aspired is not None and aspired.error:
        lines += ["", "The aspired server did not start in this run, its rows are left for a later run:", ""]
        lines += ["```", aspired.error.strip()[-1500:], "```"]
    elif aspired is None:
        lines += ["", "The aspired server was not part of this run (`--servers`)."]
    if report.get("codec"):
        lines += ["", "## Codec: protobuf (upb) vs betterproto2", "", report["codec"].strip()]
    path.write_text("\n".join(lines) + "\n")


def codec_table() -> str:
    done = subprocess.run(
        [PY, str(BENCH / "codec_bench.py")],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=900,
    )
    return (
        done.stdout if done.returncode == 0 else f"codec_bench.py failed:\n\n```\n{done.stderr[-1500:]}\n```"
    )


def ensure_demo_model() -> None:
    if not (DEMO_MODEL / "1" / "saved_model.pb").exists():
        subprocess.run(
            [
                PY,
                str(REPO / "examples" / "export_half_plus_two.py"),
                f"--output_dir={DEMO_MODEL}",
                "--model_version=1",
            ],
            check=True,
            cwd=REPO,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (median reported)")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated concurrency levels")
    parser.add_argument("--targets", default="grpc,rest", help="comma-separated: grpc, rest")
    parser.add_argument("--servers", default="echo,aspired", help="comma-separated: echo, aspired")
    parser.add_argument(
        "--processes", default="auto", help="load generator processes at c > 1: auto, 1, 2, ..."
    )
    parser.add_argument(
        "--server_cmd",
        default=f"{PY} -m svc",
        help="command of the server under test, TF Serving flags appended (default: this python -m svc; "
        "tensorflow_model_server works too)",
    )
    parser.add_argument("--ready_timeout", type=float, default=180.0, help="seconds to wait for AVAILABLE")
    parser.add_argument("--no-codec", dest="codec", action="store_false", help="skip codec_bench.py")
    parser.add_argument("--output", type=Path, default=BENCH / "RESULTS.md")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.targets = args.targets.split(",")
    names = args.servers.split(",")
    if "echo" not in names:
        parser.error("--servers must include echo: it is the baseline of every comparison")

    OUT.mkdir(exist_ok=True)
    ensure_demo_model()
    report: dict[str, Any] = {
        "args": args,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "versions": versions(),
        "loadavg_before": os.getloadavg()[0],
        "server_cmd": "python -m svc" if args.server_cmd == f"{PY} -m svc" else args.server_cmd,
        "calibration": [],
        "results": [],
    }
    with servers(names, args.ready_timeout, shlex.split(args.server_cmd)) as started:
        report["started"] = started
        echo = started["echo"]
        if echo.error:
            raise SystemExit(f"the echo server did not start: {echo.error}")
        live = [s for s in started.values() if not s.error]
        if args.processes == "auto":
            choice, report["calibration"] = calibrate(
                echo, args.targets, max(args.concurrency), args.runs, args.duration
            )
            report["processes_desc"] = (
                ", ".join(f"{t}: {p}" for t, p in choice.items()) + " (from calibration)"
            )
        else:
            choice = dict.fromkeys(args.targets, int(args.processes))
            report["processes_desc"] = f"{args.processes} (fixed by --processes)"
        for run in range(args.runs):
            print(f"run {run + 1}/{args.runs}", flush=True)
            for target in args.targets:
                for c in args.concurrency:
                    for server in live:
                        processes = 1 if c == 1 else choice[target]
                        result = loadgen(server, target, c, processes, args.duration)
                        report["results"].append({**result, "run": run})
    report["loadavg_after"] = os.getloadavg()[0]
    if args.codec:
        print("codec bench", flush=True)
        report["codec"] = codec_table()
    raw = {k: v for k, v in report.items() if k not in {"args", "started"}}
    raw["errors"] = {name: s.error for name, s in report["started"].items()}
    (OUT / "results.json").write_text(json.dumps(raw, indent=1))
    write_results(args.output, report)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
