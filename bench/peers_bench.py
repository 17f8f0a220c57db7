"""The race against the peers (issue 11): aspired, KServe's Python model server, MLServer and PyTriton serve the
same SavedModels on this machine, driven by the same C load generators, interleaved; ratio tables go to
bench/RESULTS.md. `make bench-peers` runs it (opt-in: not part of `make test`).

Models: the 784-512-10 MLP (examples/export_mlp.py), half_plus_two (examples/export_half_plus_two.py), a
224x224x3 image model and a recommender with 20 inputs (bench/peers/export_models.py). Load: closed loops of one
row per request at c=1/16/64 over REST (`wrk`, one thread) and gRPC (`h2load`, one thread, one stream per
connection), each server in its own format (bench/peers_load.py); one 224x224x3 image over REST at c=1 and a
256-row x 20-feature request over gRPC at c=16, batching-on configurations only (and KServe). Every server
configuration (bench/peers_servers.py) starts once per repetition and answers every case of it; the order of
the configurations rotates every repetition. Server CPU per answered request comes from /proc (the whole
process group of the server). Ratios are aspired / peer in the same repetition, median over repetitions.

    python bench/peers_bench.py [--runs 3] [--duration 5] [--peers KServe,MLServer,PyTriton] [--no-write]
        [--aspired-workers 2]  (also aspired with batching and 2 frontend worker processes; 1: not)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from batching_bench import OUT, PY, REPO, export_model
from json_bench import MODEL_DIR as HALF_DIR
from json_bench import export_model as export_half
from peers_load import Case, grpc_body, model_inputs, probe_grpc, probe_rest, rest_body, run_h2load, run_wrk
from peers_servers import Kind, Server, check_tools, ensure_venv
from peers_table import section
from results_md import write_section

BEGIN, END = "<!-- peers_bench: begin -->", "<!-- peers_bench: end -->"
MODELS_DIR = OUT / "models"
BIG = [Case("image", "rest", 1), Case("recommender", "grpc", 16)]
PEERS = ("KServe", "MLServer", "PyTriton")


def small_cases(concurrencies: list[int]) -> list[Case]:
    return [
        Case(m, api, c) for m in ("mlp", "half_plus_two") for api in ("rest", "grpc") for c in concurrencies
    ]


def kinds(peers: list[str], workers: int = 1) -> list[Kind]:
    out = [Kind("aspired", True), Kind("aspired", False)]
    if workers > 1:
        out.insert(1, Kind("aspired", True, workers))
    for peer in peers:
        out += [Kind(peer, False)] if peer == "KServe" else [Kind(peer, True), Kind(peer, False)]
    return out


def cases_of(kind: Kind, small: list[Case]) -> list[Case]:
    return small + (BIG if kind.batching or kind.server == "KServe" else [])


def export_models() -> dict[str, Path]:
    export_model(512)
    export_half()
    subprocess.run([PY, str(BENCH / "peers" / "export_models.py"), str(MODELS_DIR)], cwd=REPO, check=True)
    return {
        "mlp": MODELS_DIR / "mlp",
        "half_plus_two": HALF_DIR,
        **{m: MODELS_DIR / m for m in ("image", "recommender")},
    }


def bodies(work: Path) -> dict[tuple[str, str, str], Path]:
    """(model, api, format) -> request body file."""
    files = {}
    for model in ("mlp", "half_plus_two", "image", "recommender"):
        inputs = model_inputs(model)
        for api, fmt, data in (
            ("rest", "instances", rest_body("instances", inputs) if len(inputs) == 1 else None),
            ("rest", "v2", rest_body("v2", inputs)),
            ("grpc", "predict", grpc_body("predict", model, inputs)),
            ("grpc", "v2", grpc_body("v2", model, inputs)),
        ):
            if data is not None:
                path = work / f"{model}-{api}-{fmt}.{'json' if api == 'rest' else 'bin'}"
                path.write_bytes(data)
                files[(model, api, fmt)] = path
    return files


def measure(server: Server, case: Case, body: Path, duration: float, work: Path) -> dict[str, Any]:
    """Probe, warm up, then one measured closed-loop run with the server's CPU time around it."""
    if case.api == "rest":
        url = server.rest_url(case.model)
        problem = probe_rest(url, body.read_bytes())
        if problem is None:
            run_wrk(url, body, case.concurrency, 1, work)  # warm-up
    else:
        address = f"127.0.0.1:{server.grpc_port}"
        size, problem = probe_grpc(address, server.grpc_path, body.read_bytes())
    if problem is not None:
        return {"failed": problem}
    load = os.getloadavg()[0]
    before = server.cpu_seconds()
    if case.api == "rest":
        result = run_wrk(url, body, case.concurrency, duration, work)
    else:
        log = work / "h2load.log"
        result = run_h2load(
            f"http://{address}{server.grpc_path}", body, case.concurrency, duration, size, log
        )
    cpu = server.cpu_seconds() - before
    return result | {"cpu_us": cpu / max(result["ok"], 1) * 1e6, "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured cell")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--concurrency", default="1,16,64", help="of the one-row cases")
    parser.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    parser.add_argument("--note", default="", help="a paragraph written under the tables")
    parser.add_argument("--aspired-workers", type=int, default=2,
                        help="also race aspired with batching and this many --frontend_workers (1: not)")
    args = parser.parse_args()
    if missing := check_tools():
        raise SystemExit("bench-peers needs: " + "; ".join(missing))
    peers, unavailable = [], {}
    for peer in args.peers.split(","):
        try:
            ensure_venv(peer)
            peers.append(peer)
        except RuntimeError as exc:
            unavailable[peer] = str(exc)
            print(f"*** {peer} cannot run here, left out of the race: {exc}", flush=True)
    models = export_models()
    work = OUT / "peers" / "work"
    work.mkdir(parents=True, exist_ok=True)
    files = bodies(work)
    small = small_cases([int(c) for c in args.concurrency.split(",")])
    order = kinds(peers, args.aspired_workers)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}  # kind name -> case label -> per repetition
    load_before = os.getloadavg()
    started = dt.datetime.now()
    for rep in range(args.runs):
        for kind in order[rep % len(order) :] + order[: rep % len(order)]:
            venv = None if kind.server == "aspired" else ensure_venv(kind.server)
            cells = results.setdefault(kind.name, {})
            try:
                server = Server(kind, models, venv)
            except RuntimeError as exc:
                print(f"*** {kind.name} did not start: {exc}", flush=True)
                for case in cases_of(kind, small):
                    cells.setdefault(case.label, []).append({"failed": f"server did not start: {exc}"[:300]})
                continue
            try:
                for case in cases_of(kind, small):
                    fmt = kind.rest_format if case.api == "rest" else kind.grpc_format
                    result = measure(server, case, files[(case.model, case.api, fmt)], args.duration, work)
                    cells.setdefault(case.label, []).append(result)
                    print(f"run {rep + 1} {kind.name} {case.label}: {json.dumps(result)}", flush=True)
            finally:
                server.stop()
    setup = {
        "command": (
            f"python bench/peers_bench.py --runs {args.runs} --duration {args.duration:g} --peers {args.peers} "
            f"--concurrency {args.concurrency}"
            + (f" --aspired-workers {args.aspired_workers}" if args.aspired_workers > 1 else "")
        ),
        "date": started.date().isoformat(),
        "revision": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip(),
        "machine": f"{platform.machine()} with {os.cpu_count()} CPUs",
        "load": (load_before, os.getloadavg()),
        "minutes": (dt.datetime.now() - started).total_seconds() / 60,
        "unavailable": unavailable,
        "note": args.note,
    }
    (OUT / "peers.json").write_text(json.dumps({"setup": setup, "results": results}, indent=1))
    lines = [BEGIN, *section(results, setup, [*small, *BIG], peers, args.aspired_workers), END]
    print("\n".join(lines))
    if not args.no_write:
        write_section(BEGIN, END, "\n".join(lines))


if __name__ == "__main__":
    main()
