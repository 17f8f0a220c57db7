"""Metrics: TF Serving's Prometheus series under their own names, plus aspired's per-version series.

TF Serving exports its TF-monitoring metrics with every character outside `[a-zA-Z0-9_]` turned into `:`
(`/tensorflow/serving/request_count` → `:tensorflow:serving:request_count`), counters without a `_total`
suffix and latency histograms in microseconds with TF's exponential buckets
(`util/prometheus_exporter.cc`, `model_servers/http_rest_api_handler.cc`, `servables/tensorflow/util.cc`).
Those are rendered here in that exact form. aspired's own series (`aspired_*`, seconds, `model` and `version`
labels) use prometheus-client. Both are served on the REST port at the path of `--monitoring_config_file`.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from svc.errors import Code

_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def exported_name(tf_name: str) -> str:
    name = _UNSAFE.sub(":", tf_name)
    return "_" + name if name[:1].isdigit() else name


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _label_name(name: str) -> str:
    clean = re.sub(r"[^a-zA-Z0-9]", "_", name)
    return "_" + clean if clean[:1].isdigit() else clean


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    """`{n1="v1",...}`; like TF Serving's exporter, the braces are there even with no label."""
    parts = [f'{_label_name(n)}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}"


def _number(value: float) -> str:
    """Numbers as absl::StrCat prints a double: six significant digits."""
    return f"{value:.6g}"


def exponential_buckets(scale: float, growth: float, count: int) -> list[float]:
    return [scale * growth**i for i in range(count)]


@dataclass
class TfCounter:
    """A TF-monitoring counter."""

    name: str
    label_names: tuple[str, ...]
    values: dict[tuple[str, ...], int] = field(default_factory=dict)

    def increment(self, *labels: str, by: int = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + by

    def render(self) -> list[str]:
        name = exported_name(self.name)
        lines = [f"# TYPE {name} counter"]
        lines += [f"{name}{_labels(self.label_names, k)} {v}" for k, v in sorted(self.values.items())]
        return lines


@dataclass
class TfHistogram:
    """A TF-monitoring histogram (bucket limits as TF prints them; the last bucket is +Inf)."""

    name: str
    label_names: tuple[str, ...]
    limits: list[float]
    points: dict[tuple[str, ...], tuple[list[int], list[float]]] = field(default_factory=dict)

    def observe(self, value: float, *labels: str) -> None:
        counts, totals = self.points.setdefault(labels, ([0] * (len(self.limits) + 1), [0.0]))
        counts[bisect.bisect_left(self.limits, value)] += 1
        totals[0] += value

    def render(self) -> list[str]:
        name = exported_name(self.name)
        lines = [f"# TYPE {name} histogram"]
        for labels, (counts, totals) in sorted(self.points.items()):
            lines += _histogram_lines(name, self.label_names, labels, self.limits, counts, totals[0])
        return lines


def _histogram_lines(
    name: str, names: Sequence[str], values: Sequence[str], limits: Sequence[float], counts: Sequence[float],
    total: float,
) -> list[str]:
    """One histogram point as TF Serving writes it: cumulative buckets (`counts` has one more entry than
    `limits`: the last bucket is `+Inf`), then `_sum` and `_count`."""
    lines = []
    cumulative = 0
    for limit, count in zip([*limits, None], counts, strict=True):
        cumulative += int(count)
        le = 'le="{}"'.format("+Inf" if limit is None else _number(limit))
        lines.append(f"{name}_bucket{_labels(names, values, le)} {cumulative}")
    lines.append(f"{name}_sum{_labels(names, values)} {_number(total)}")
    lines.append(f"{name}_count{_labels(names, values)} {cumulative}")
    return lines


@dataclass(frozen=True)
class TfPoint:
    """One point of a metric in TensorFlow's own registry (svc/servables/tf_registry.py reads them)."""

    labels: tuple[tuple[str, str], ...]
    value: str  # int64 or double as text, 0/1 for a bool, a string gauge's text
    histogram: tuple[float, tuple[tuple[float, float], ...]] | None = None  # (sum, ((limit, count), ...))


@dataclass(frozen=True)
class TfFamily:
    """One metric of TensorFlow's registry: its TF name, kind, value type (i d b s h p) and points."""

    name: str
    cumulative: bool
    value_type: str
    points: tuple[TfPoint, ...]

    def render(self) -> list[str]:
        """As TF Serving's exporter writes it, except that double and bool gauges show their value (TF Serving
        prints every scalar's int64 field, 0 for those); string and percentile values print 0 as there."""
        name = exported_name(self.name)
        kind = "histogram" if self.value_type == "h" else "counter" if self.cumulative else "gauge"
        lines = [f"# TYPE {name} {kind}"]
        for point in self.points:
            names, values = zip(*point.labels, strict=True) if point.labels else ((), ())
            if self.value_type == "h":
                total, buckets = point.histogram or (0.0, ())
                limits = [limit for limit, _ in buckets[:-1]]  # TF's last limit is DBL_MAX: written +Inf
                counts = [count for _, count in buckets] or [0.0]
                lines += _histogram_lines(name, names, values, limits, counts, total)
            else:
                lines.append(f"{name}{_labels(names, values)} {self._scalar(point.value)}")
        return lines

    def _scalar(self, value: str) -> str:
        if self.value_type in ("i", "b"):
            return value
        return _number(float(value)) if self.value_type == "d" else "0"


_LATENCY_US = exponential_buckets(10, 1.8, 33)
_QUEUE_US = exponential_buckets(100, 1.2, 52)
_LATENCY_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric of the server; methods are called from the event loop and from load threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # prometheus children by labels, looked up once (dict get/set are atomic under the GIL)
        self._request_children: dict[tuple[str, int | None, str, str, Code], tuple[Counter, Histogram | None]] = {}
        self._batch_children: dict[tuple[str, int], tuple[Histogram, Histogram]] = {}
        self.request_count = TfCounter("/tensorflow/serving/request_count", ("model_name", "status"))
        self.request_latency = TfHistogram(
            "/tensorflow/serving/request_latency", ("model_name", "API", "entrypoint"), _LATENCY_US
        )
        self.runtime_latency = TfHistogram(
            "/tensorflow/serving/runtime_latency", ("model_name", "API", "runtime"), _LATENCY_US
        )
        self.queuing_latency = TfHistogram(
            "/tensorflow/serving/batching_session/queuing_latency", ("thread_pool_name",), _QUEUE_US
        )
        self.load_attempt_count = TfCounter(
            "/tensorflow/cc/saved_model/load_attempt_count", ("model_path", "status")
        )
        self.load_latency = TfCounter("/tensorflow/cc/saved_model/load_latency", ("model_path",))
        self.example_counts = TfHistogram(
            "/tensorflow/serving/request_example_counts", ("model",), exponential_buckets(1, 2, 15)
        )
        self.example_count_total = TfCounter("/tensorflow/serving/request_example_count_total", ("model",))
        # TensorFlow's own registry (TF Serving exports all of it), once svc/servables/tf_registry.py has built
        # its reader; until then, or without a compiler, TF core's two session counters are counted here.
        self._tf_registry: Callable[[], Sequence[TfFamily]] | None = None
        self.graph_runs = TfCounter("/tensorflow/core/graph_runs", ())
        self.graph_run_time = TfCounter("/tensorflow/core/graph_run_time_usecs", ())
        self._tf: list[TfCounter | TfHistogram] = [
            self.request_count, self.request_latency, self.runtime_latency, self.queuing_latency,
            self.load_attempt_count, self.load_latency, self.example_counts, self.example_count_total,
            self.graph_runs, self.graph_run_time,
        ]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "aspired_requests", "Requests by model version, API, protocol and status code.",
            ["model", "version", "api", "protocol", "code"], registry=r,
        )
        self.latency = Histogram(
            "aspired_request_latency_seconds", "Request latency by model version, API and protocol.",
            ["model", "version", "api", "protocol"], buckets=_LATENCY_S, registry=r,
        )
        self.queue_time = Histogram(
            "aspired_queue_time_seconds", "Time a task waited in its batch queue.",
            ["model", "version"], buckets=_LATENCY_S, registry=r,
        )
        self.batch_size = Histogram(
            "aspired_batch_size", "Tasks' rows per executed batch.", ["model", "version"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r,
        )
        self.load_duration = Histogram(
            "aspired_load_duration_seconds", "Time to load (and warm up) a version.", ["model", "version"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=r,
        )
        self.unload_duration = Histogram(
            "aspired_unload_duration_seconds", "Time from UNLOADING to END of a version.", ["model", "version"],
            buckets=(0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60), registry=r,
        )
        self.load_failures = Counter(
            "aspired_load_failures", "Failed load attempts.", ["model", "version"], registry=r
        )
        self._gauges: list[Callable[[], Iterable[Metric]]] = []
        r.register(_Callback(self._gauges))

    def add_gauges(self, source: Callable[[], Iterable[Metric]]) -> None:
        """A callable producing metric families at scrape time (versions by state, queue depth, ...)."""
        self._gauges.append(source)

    # -- recording ------------------------------------------------------------------------------------
    def request(
        self, *, protocol: str, api: str, model: str, version: int | None, code: Code, seconds: float,
        tf_api: str | None,
    ) -> None:
        """One finished request. `tf_api` is the API label of TF's series, None when TF records nothing."""
        key = (model, version, api, protocol, code)
        children = self._request_children.get(key)
        if children is None:  # label lookups once per series, not per request (issue 11)
            v = "" if version is None else str(version)
            ok = self.latency.labels(model, v, api, protocol) if code is Code.OK else None
            children = self._request_children[key] = (self.requests.labels(model, v, api, protocol, code.name), ok)
        children[0].inc()
        if children[1] is not None:
            children[1].observe(seconds)
        if tf_api is None:
            return
        with self._lock:
            self.request_count.increment(model, code.name)
            if code is Code.OK:
                entry = "GRPC" if protocol == "grpc" else "REST"
                self.request_latency.observe(seconds * 1e6, model, tf_api, entry)

    def runtime(self, model: str, api: str, seconds: float) -> None:
        with self._lock:
            self.runtime_latency.observe(seconds * 1e6, model, api, "TF1")

    def load(self, model: str, version: int, path: str, seconds: float, ok: bool) -> None:
        with self._lock:
            self.load_attempt_count.increment(path, "success" if ok else "fail")
            if ok:
                self.load_latency.increment(path, by=int(seconds * 1e6))
        if ok:
            self.load_duration.labels(model, str(version)).observe(seconds)
        else:
            self.load_failures.labels(model, str(version)).inc()

    def graph_run(self, seconds: float) -> None:
        """One TensorFlow session run (any thread)."""
        with self._lock:
            self.graph_runs.increment()
            self.graph_run_time.increment(by=int(seconds * 1e6))

    def examples(self, model: str, count: int) -> None:
        """Examples in one Classify/Regress/MultiInference request."""
        with self._lock:
            self.example_counts.observe(count, model)
            self.example_count_total.increment(model, by=count)

    def attach_tf_registry(self, collect: Callable[[], Sequence[TfFamily]]) -> None:
        """TensorFlow's registry joins the page (and ReloadConfig's metrics); it counts the session runs."""
        self._tf_registry = collect

    def _own(self) -> list[TfCounter | TfHistogram]:
        if self._tf_registry is None:
            return self._tf
        return [m for m in self._tf if m is not self.graph_runs and m is not self.graph_run_time]

    def int64_value(self, tf_name: str) -> int | None:
        """The first point of an int64 TF metric by its TF name (`/tensorflow/...`), aspired's or TensorFlow's
        registry's; None for an unknown name."""
        with self._lock:
            for metric in self._own():
                if metric.name == tf_name and isinstance(metric, TfCounter):
                    return next(iter(metric.values.values()), 0)
        if self._tf_registry is not None:
            for family in self._tf_registry():
                if family.name == tf_name and family.value_type == "i":
                    return int(family.points[0].value) if family.points else 0
        return None

    def unload(self, model: str, version: int, seconds: float) -> None:
        self.unload_duration.labels(model, str(version)).observe(seconds)

    def batch(self, model: str, version: int, size: int, queued_seconds: Sequence[float]) -> None:
        children = self._batch_children.get((model, version))
        if children is None:
            v = str(version)
            children = self._batch_children[(model, version)] = (
                self.batch_size.labels(model, v), self.queue_time.labels(model, v)
            )
        children[0].observe(size)
        for seconds in queued_seconds:
            children[1].observe(seconds)
        with self._lock:
            for seconds in queued_seconds:
                self.queuing_latency.observe(seconds * 1e6, "model_server_batch_threads")

    # -- exposition -----------------------------------------------------------------------------------
    def render(self) -> bytes:
        """TF-form series by name, aspired's over TensorFlow registry's of the same name; then aspired's own."""
        families: dict[str, TfCounter | TfHistogram | TfFamily] = {}
        if self._tf_registry is not None:
            families.update((f.name, f) for f in self._tf_registry())
        with self._lock:
            families.update((m.name, m) for m in self._own())
            lines = [line for _, metric in sorted(families.items()) for line in metric.render()]
        return ("\n".join(lines) + "\n").encode() + generate_latest(self.registry)


class _Callback(Collector):
    def __init__(self, sources: list[Callable[[], Iterable[Metric]]]) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        for source in self._sources:
            yield from source()

    def describe(self) -> Iterable[Metric]:
        return []


def gauge(name: str, doc: str, labels: Sequence[str], values: Iterable[tuple[Sequence[str], float]]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for label_values, value in values:
        family.add_metric(list(label_values), value)
    return family
