"""REST predict of big JSON bodies (issue 11): one and ten 224x224x3 float32 images as `instances` to
half_plus_two, end to end over loopback, against the in-process floor of the same body.

The floor is what any Python server must at least do with the body, in this process: `orjson.loads`,
`np.asarray(..., float32)`, y = 0.5x + 2, `orjson.dumps` of the result with numpy serialization. The server is
`python -m svc` from this tree; `--baseline REF` adds the same server from a git revision (exported with
`git archive` into bench/out/), run side by side. One client (http.client, keep-alive), one request at a time;
the cases are interleaved in every repetition and the ratio is the median of the per-repetition ratios.
The table replaces the "JSON bodies" section of bench/RESULTS.md (between its markers) or is appended to it.

    python bench/json_bench.py [--runs 5] [--baseline c7b7015]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import io
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
from results_md import write_section

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
MODEL_DIR = OUT / "models" / "half_plus_two"
BEGIN, END = "<!-- json_bench: begin -->", "<!-- json_bench: end -->"
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def export_model() -> None:
    if not (MODEL_DIR / "1" / "saved_model.pb").exists():
        script = REPO / "examples" / "export_half_plus_two.py"
        subprocess.run(
            [PY, str(script), f"--output_dir={MODEL_DIR}", "--model_version=1"], cwd=REPO, check=True
        )


def export_revision(ref: str) -> Path:
    """The tree of a git revision, unpacked under bench/out/rev-<ref> (for a side-by-side baseline)."""
    target = OUT / f"rev-{ref}"
    if not (target / "svc").exists():
        archive = subprocess.run(["git", "archive", ref], cwd=REPO, capture_output=True, check=True).stdout
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
    return target


class Server:
    def __init__(self, name: str, tree: Path) -> None:
        self.name = name
        self.rest_port = free_port()
        argv = [
            PY,
            "-m",
            "svc",
            f"--port={free_port()}",
            f"--rest_api_port={self.rest_port}",
            "--model_name=half_plus_two",
            f"--model_base_path={MODEL_DIR}",
            "--request_log_sample_rate=0",
            "--file_system_poll_wait_seconds=0",
        ]
        self.log = OUT / "logs" / f"json_{name}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(tree)}
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(argv, cwd=tree, env=env, stdout=sink, stderr=subprocess.STDOUT)
        self.connection = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=300)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{name} exited:\n{self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, text = self.call("GET", "/v1/models/half_plus_two", b"")
                if status == 200 and b"AVAILABLE" in text:
                    return
            self.connection.close()
            time.sleep(0.25)
        raise SystemExit(f"{name} not ready")

    def call(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        self.connection.request(method, path, body, {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        return response.status, response.read()

    def predict(self, body: bytes) -> bytes:
        status, text = self.call("POST", "/v1/models/half_plus_two:predict", body)
        if status != 200:
            raise SystemExit(f"{self.name}: HTTP {status}: {text[:300]!r}")
        return text

    def stop(self) -> None:
        self.connection.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def servers(trees: dict[str, Path]) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for name, tree in trees.items():
            started[name] = Server(name, tree)
        yield started
    finally:
        for server in started.values():
            server.stop()


def floor(body: bytes) -> bytes:
    """The in-process floor: parse, to numpy, compute, write."""
    x = np.asarray(orjson.loads(body)["instances"], dtype=np.float32)
    return orjson.dumps(
        {"predictions": x * np.float32(0.5) + np.float32(2)}, option=orjson.OPT_SERIALIZE_NUMPY
    )


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--images", default="1,10")
    parser.add_argument("--baseline", default="", help="a git revision to run side by side")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    export_model()
    trees = {"aspired": REPO}
    if args.baseline:
        trees[f"baseline {args.baseline}"] = export_revision(args.baseline)
    rng = np.random.default_rng(11)
    counts = [int(n) for n in args.images.split(",")]
    bodies = {
        n: orjson.dumps({"instances": rng.random((n, 224, 224, 3), dtype=np.float32).tolist()})
        for n in counts
    }
    samples: dict[tuple[int, str], list[float]] = {}
    with servers(trees) as running:
        for server in running.values():  # warm-up, and the same answer from every server
            server.predict(bodies[counts[0]])
        for _ in range(args.runs):
            for n, body in bodies.items():
                samples.setdefault((n, "floor"), []).append(timed(lambda body=body: floor(body)))
                for name, server in running.items():
                    samples.setdefault((n, name), []).append(timed(lambda s=server, b=body: s.predict(b)))
    names = list(trees)
    lines = [
        BEGIN,
        "## JSON bodies: REST predict of 224x224x3 float32 images (half_plus_two)",
        "",
        f"`python bench/json_bench.py --runs {args.runs}"
        + (f" --baseline {args.baseline}" if args.baseline else "")
        + f"` on {dt.date.today()}, {platform.machine()} with {os.cpu_count()} CPUs shared with other work"
        f" (load average {os.getloadavg()[0]:.1f} at the end). Floor = `orjson.loads` + `np.asarray(float32)` +"
        " 0.5x+2 + `orjson.dumps(OPT_SERIALIZE_NUMPY)` of the same body in one process. One request at a time"
        " over keep-alive HTTP/1.1; cases interleaved; median ms of the runs, ratio = median of per-run ratios.",
        "",
        "| images | body MB | floor ms | " + " | ".join(f"{n} ms | {n} / floor" for n in names) + " |",
        "|---:|---:|---:|" + "---:|---:|" * len(names),
    ]
    for n, body in bodies.items():
        base = samples[(n, "floor")]
        cells = [f"{n}", f"{len(body) / 1e6:.1f}", f"{statistics.median(base):.0f}"]
        for name in names:
            own = samples[(n, name)]
            ratio = statistics.median(a / b for a, b in zip(own, base, strict=True))
            cells += [f"{statistics.median(own):.0f}", f"{ratio:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(END)
    print("\n".join(lines))
    if not args.no_write:
        write_section(BEGIN, END, "\n".join(lines))


if __name__ == "__main__":
    main()
