"""The RESULTS.md section of bench/peers_bench.py: for batching on and off, a table of medians per server and a
table of ratios aspired / peer (the median of the per-repetition ratios). A cell where either side answered an
error (non-2xx, a socket error, a gRPC call without its answer) or could not be measured says so."""

from __future__ import annotations

import statistics
from typing import Any

from peers_load import Case
from peers_servers import ASPIRED_BATCHING, MLSERVER_BATCH, Kind

METRICS = (("rps", "rps"), ("p50_ms", "p50"), ("p99_ms", "p99"), ("cpu_us", "CPU/req"))


def _ok(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if "failed" not in r]


def _flags(runs: list[dict[str, Any]]) -> str:
    errors = sum(r.get("errors", 0) for r in runs)
    failed = [r["failed"] for r in runs if "failed" in r]
    text = f" **{errors} errors**" if errors else ""
    if failed:
        text += f" **failed ({len(failed)}/{len(runs)}): {failed[0][:120]}**".replace("|", "/")
    return text


def _absolute(runs: list[dict[str, Any]]) -> str:
    good = _ok(runs)
    if not good:
        return "—" + _flags(runs)
    med = {key: statistics.median(r[key] for r in good) for key, _ in METRICS}
    return (
        f"{med['rps']:.0f} rps, {med['p50_ms']:.3g}/{med['p99_ms']:.3g} ms, {med['cpu_us']:.0f} µs"
        + _flags(runs)
    )


def _ratios(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[str]:
    pairs = [(a, b) for a, b in zip(ours, theirs, strict=False) if "failed" not in a and "failed" not in b]
    if not pairs:
        return ["—"] * len(METRICS)
    mark = "!" if any(r.get("errors", 0) for r in (*ours, *theirs)) else ""
    return [f"{statistics.median(a[k] / b[k] for a, b in pairs if b[k]):.2f}{mark}" for k, _ in METRICS]


def section(
    results: dict[str, dict[str, list[dict[str, Any]]]],
    setup: dict[str, Any],
    cases: list[Case],
    peers: list[str],
    workers: int = 1,
) -> list[str]:
    (b1, b5, b15), (a1, a5, a15) = setup["load"]
    loads = [r["load"] for cells in results.values() for runs in cells.values() for r in runs if "load" in r]
    batching = " ".join(line.strip() for line in ASPIRED_BATCHING.splitlines())
    lines = [
        "## The race: aspired against KServe, MLServer and PyTriton (issue 11)",
        "",
        (
            f"`{setup['command']}` (`make bench-peers`) on {setup['date']}, aspired at {setup.get('revision', '?')}, "
            f"{setup['machine']} shared by the "
            f"servers, the load generators and other sessions: load average {b1:.1f}/{b5:.1f}/{b15:.1f} before, "
            f"{a1:.1f}/{a5:.1f}/{a15:.1f} after, 1-minute load {min(loads, default=0):.1f}-"
            f"{max(loads, default=0):.1f} at the start of the measured cells; {setup['minutes']:.0f} minutes. "
            "Same SavedModels everywhere, one row per request (the image: one 224x224x3 float32 image; the "
            "recommender: 256 rows x 20 one-column features), closed loops: `wrk -t1` over REST, `h2load -t1 -m1` "
            "over gRPC, 1 s warm-up then the measured run. Formats: aspired TF Serving REST `instances` and gRPC "
            "Predict (`tensor_content`); KServe V1 REST `instances` and V2 gRPC ModelInfer; MLServer and PyTriton "
            "V2 REST `inputs` and V2 gRPC ModelInfer (`raw_input_contents`). Each server configuration starts "
            "once per repetition and runs every case; the configurations' order rotates every repetition. CPU = "
            "user + system time of the server's whole process group (/proc) over the measured run, per answered "
            "request. Medians over the repetitions; ratios = aspired / peer per repetition, median (rps above 1 "
            "and latency or CPU below 1 favour aspired); `!` marks a ratio whose cells had errors."
        ),
        "",
        (
            f"Servers as shipped, logs to files: aspired (`python -m svc`, request log at the default rate; "
            f"batching: `{batching}`"
            + (f"; with batching also with `--frontend_workers={workers}`: {workers} frontend processes in front of "
               "the one process holding the models" if workers > 1 else "")
            + "); KServe's `ModelServer` (uvicorn + grpcio, a synchronous `kserve.Model` "
            "calling TF inline, per-request latency log and access log on; no batching in the Python server, so "
            "its one configuration appears in both tables); MLServer (a custom `MLModel`, one parallel inference "
            f"worker process by default; adaptive batching {MLSERVER_BATCH}); PyTriton (tritonserver's C++ "
            "frontends, the callback in PyTriton's Python process; dynamic batching, max_batch_size 512, no queue "
            "delay). Every Python callback calls the signature through `Session.make_callable` "
            "(bench/peers/tf_signature.py)."
        ),
    ]
    for peer, reason in setup["unavailable"].items():
        lines += ["", f"**{peer} is not in this run**: {reason}"]
    for on in (True, False):
        ours = Kind("aspired", on).name
        multi = Kind("aspired", True, workers).name
        mine = [ours] + ([multi] if on and workers > 1 and multi in results else [])
        others = [Kind(p, on and p != "KServe").name for p in peers]
        chosen = [c for c in cases if c.label in results.get(ours, {})]
        lines += [
            "",
            f"### Batching {'on' if on else 'off'}: medians (rps, p50/p99 latency, server CPU per request)",
            "",
            "| case | " + " | ".join([*mine, *others]) + " |",
            "|---|" + "---|" * (len(mine) + len(others)),
        ]
        for case in chosen:
            cells = [_absolute(results[name].get(case.label, [])) for name in [*mine, *others]]
            lines.append(f"| {case.label} | " + " | ".join(cells) + " |")
        for name in mine:
            lines += [
                "",
                f"### Batching {'on' if on else 'off'}: ratios {name} / peer",
                "",
                "| case | " + " | ".join(f"{p} {m}" for p in peers for _, m in METRICS) + " |",
                "|---|" + "---:|" * (len(peers) * len(METRICS)),
            ]
            for case in chosen:
                cells = []
                for other in others:
                    cells += _ratios(results[name].get(case.label, []), results[other].get(case.label, []))
                lines.append(f"| {case.label} | " + " | ".join(cells) + " |")
    if setup["note"]:
        lines += ["", setup["note"]]
    return lines
