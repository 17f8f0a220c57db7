"""TensorFlow's own metric registry on the Prometheus page (issue 10: TF Serving exports every metric of TF's
`CollectionRegistry`; `:tensorflow:core:graph_runs`, `graph_build_calls`, ... were missing)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from svc.logging import configure_logging, log_sink
from svc.metrics import Metrics, TfFamily, TfPoint
from svc.servables import tf_registry

HALF_PLUS_TWO = Path(__file__).parents[2] / ".." / "shared" / "tfserving-testdata" / "saved_model_half_plus_two_cpu"

R, F = "\x1e", "\x1f"


def test_parse_reads_every_kind_of_record() -> None:
    text = (
        f"{R}M{F}/a/count{F}1{F}i{R}P{F}7{F}0{R}P{F}3{F}2{F}kind{F}x{F}name{F}y"
        f"{R}M{F}/b/flag{F}0{F}b"
        f"{R}M{F}/c/hist{F}1{F}h{R}P{F}12.5{F}3{F}1{F}2{F}10{F}1{F}1.7976931348623157e+308{F}1{F}0"
    )
    assert tf_registry.parse(text) == [
        TfFamily("/a/count", True, "i", (TfPoint((), "7"), TfPoint((("kind", "x"), ("name", "y")), "3"))),
        TfFamily("/b/flag", False, "b", ()),
        TfFamily(
            "/c/hist", True, "h",
            (TfPoint((), "0", (12.5, ((1.0, 2.0), (10.0, 1.0), (1.7976931348623157e308, 1.0)))),),
        ),
    ]


@pytest.mark.parametrize(
    ("family", "lines"),
    [
        (TfFamily("/tensorflow/core/graph_runs", True, "i", (TfPoint((), "7"),)),
         ["# TYPE :tensorflow:core:graph_runs counter", ":tensorflow:core:graph_runs{} 7"]),
        (TfFamily("/t/g", False, "i", (TfPoint((("model name", 'a"b\\c'),), "-3"),)),
         ["# TYPE :t:g gauge", ':t:g{model_name="a\\"b\\\\c"} -3']),
        (TfFamily("/t/on", False, "b", (TfPoint((("status", "enable"),), "1"),)),
         ["# TYPE :t:on gauge", ':t:on{status="enable"} 1']),
        (TfFamily("/t/d", False, "d", (TfPoint((), "0.25"),)), ["# TYPE :t:d gauge", ":t:d{} 0.25"]),
        (TfFamily("/t/s", False, "s", (TfPoint((("k", "v"),), "some text"),)),
         ["# TYPE :t:s gauge", ':t:s{k="v"} 0']),  # TF Serving prints a string gauge's (absent) int64: 0
        (TfFamily("/t/none", True, "i", ()), ["# TYPE :t:none counter"]),
        (TfFamily("/t/h", True, "h", (TfPoint((("api", "x"),), "0", (12.5, ((1.0, 2.0), (10.0, 1.0), (1e308, 1.0)))),)),
         ["# TYPE :t:h histogram", ':t:h_bucket{api="x",le="1"} 2', ':t:h_bucket{api="x",le="10"} 3',
          ':t:h_bucket{api="x",le="+Inf"} 4', ':t:h_sum{api="x"} 12.5', ':t:h_count{api="x"} 4']),
        (TfFamily("9/x", True, "i", (TfPoint((("0a", "v"),), "1"),)), ["# TYPE _9:x counter", '_9:x{_0a="v"} 1']),
    ],
)
def test_render_as_tf_serving_exports(family: TfFamily, lines: list[str]) -> None:
    assert family.render() == lines


def test_page_merges_the_registry_sorted_by_name_and_aspired_series_win() -> None:
    metrics = Metrics()
    metrics.graph_run(0.001)  # counted here only while TF's registry is not attached
    assert ":tensorflow:core:graph_runs{} 1" in metrics.render().decode()
    metrics.load("m", 1, "/p", 0.5, ok=True)
    registry = [
        TfFamily("/tensorflow/core/graph_runs", True, "i", (TfPoint((), "41"),)),
        TfFamily("/tensorflow/cc/saved_model/load_attempt_count", True, "i", ()),  # TF's Python loader: empty
        TfFamily("/tensorflow/api/tf_function", False, "b", (TfPoint((), "1"),)),
    ]
    metrics.attach_tf_registry(lambda: registry)
    page = metrics.render().decode()
    assert page.count("# TYPE :tensorflow:core:graph_runs counter") == 1
    assert ":tensorflow:core:graph_runs{} 41" in page  # TensorFlow's own count, not aspired's
    assert ':tensorflow:cc:saved_model:load_attempt_count{model_path="/p",status="success"} 1' in page
    types = re.findall(r"^# TYPE (:tensorflow:\S+)", page, re.MULTILINE)
    assert types == sorted(types)
    assert metrics.int64_value("/tensorflow/core/graph_runs") == 41
    assert metrics.int64_value("/tensorflow/cc/saved_model/load_attempt_count") == 1
    assert metrics.int64_value("/nope") is None


def test_the_reader_builds_and_reads_tensorflows_registry(tmp_path: Path) -> None:
    import tensorflow as tf

    registry = tf_registry.load(tmp_path)
    assert registry is not None, "a C++ compiler and TensorFlow's headers are needed to build the reader"
    assert len(list(tmp_path.glob("tf_registry-*.so"))) == 1

    def runs() -> int:
        family = next(f for f in registry.collect() if f.name == "/tensorflow/core/graph_runs")
        return int(family.points[0].value) if family.points else 0

    before = runs()
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(HALF_PLUS_TWO / "00000123"))
        signature = meta.signature_def["serving_default"]
        run = session.make_callable(signature.outputs["y"].name, [signature.inputs["x"].name])
        for _ in range(3):
            run(np.ones((2, 1), np.float32))
    assert runs() >= before + 3
    names = {f.name for f in registry.collect()}
    assert {"/tensorflow/core/graph_run_time_usecs", "/tensorflow/core/direct_session_runs"} <= names
    assert tf_registry.load(tmp_path) is not None  # the cached build is reused
    assert len(list(tmp_path.glob("*.so"))) == 1


def test_without_a_compiler_the_server_keeps_its_own_series(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    configure_logging("json", "debug")  # the session's configuration (tests/conftest.py), JSON lines to parse
    lines: list[str] = []
    with log_sink(lines.append):  # the rendered lines (capture_logs misses loggers cached earlier)
        assert tf_registry.load(tmp_path / "cache") is None
    [event] = [e for e in map(json.loads, lines) if e["event"] == "tf_registry_unavailable"]
    assert event["level"] == "warning"
    assert "no-such-compiler" in event["reason"]
