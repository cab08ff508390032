"""`GET /metrics`: Prometheus text, with Triton's names for what Triton also measures and gfedge_* for the zoo.

Triton's per-model families keep Triton's names, types and labels (`model`, `version`; failures
also `reason`), so a Triton dashboard reads them unchanged:
  nv_inference_request_success / _failure   requests answered / refused or failed (each request counts 1)
  nv_inference_count, nv_inference_exec_count   inferences and executions (no batching here: one each per answered request)
  nv_inference_request_duration_us          cumulative microseconds, whole request (read, queue, choose, load, run, encode)
  nv_inference_queue_duration_us            cumulative microseconds waiting for a worker thread
  nv_inference_compute_infer_duration_us    cumulative microseconds in the zoo (choice, any load, the run)
  nv_inference_pending_request_count        requests waiting for a worker now
They are counters written as Triton writes them (no `_total` suffix), so they are rendered here;
the rest comes from prometheus_client: latency histograms (`gfedge_request_duration_seconds`,
`gfedge_queue_duration_seconds`), requests in flight, refusals by reason, and the zoo's own figures
read at scrape time (hits, swaps, evictions, loads, each model's state and resident bytes, the
budget). A model label is the model that served; a request refused before a model was chosen
counts under the name it asked for if that is a model (or `_zoo`), else `_unknown`, so requests
cannot make new label values.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from geofractal_edge.runtimes.zoo.catalog import LOADING, QUARANTINED, REGISTERED, RESIDENT
from geofractal_edge.runtimes.zoo.serving.inference import VERSION

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NV = {  # name -> (type, help)
    "nv_inference_request_success": ("counter", "Number of successful inference requests, all batch sizes"),
    "nv_inference_request_failure": ("counter", "Number of failed inference requests, all batch sizes"),
    "nv_inference_count": ("counter", "Number of inferences performed (one per answered request: no batching)"),
    "nv_inference_exec_count": ("counter", "Number of model executions performed"),
    "nv_inference_request_duration_us": ("counter", "Cumulative inference request duration in microseconds"),
    "nv_inference_queue_duration_us": ("counter", "Cumulative inference queuing duration in microseconds"),
    "nv_inference_compute_infer_duration_us": ("counter", "Cumulative compute inference duration in microseconds"),
    "nv_inference_pending_request_count": ("gauge", "Instantaneous number of pending requests awaiting execution per-model"),
}
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServeMetrics:
    def __init__(self, zoo) -> None:
        self._lock = threading.Lock()
        self._nv: dict[str, dict[tuple, float]] = {name: defaultdict(float) for name in _NV}
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency = Histogram("gfedge_request_duration_seconds", "Whole inference requests, by the model that served", ["model"],
                                 buckets=_BUCKETS, registry=self.registry)
        self.queue = Histogram("gfedge_queue_duration_seconds", "Time an inference request waited for a worker thread", buckets=_BUCKETS,
                               registry=self.registry)
        self.in_flight = Gauge("gfedge_requests_in_flight", "HTTP requests accepted and not yet answered", registry=self.registry)
        self.refused = Counter("gfedge_http_refused", "HTTP requests refused before any work, by reason", ["reason"], registry=self.registry)
        self.registry.register(ZooCollector(zoo))

    def waiting(self, model: str, delta: int) -> None:
        with self._lock:
            self._nv["nv_inference_pending_request_count"][(model, VERSION)] += delta

    def succeeded(self, model: str, *, total_s: float, queue_s: float, compute_s: float) -> None:
        self.latency.labels(model).observe(total_s)
        self.queue.observe(queue_s)
        with self._lock:
            labels = (model, VERSION)
            for name in ("nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count"):
                self._nv[name][labels] += 1
            self._nv["nv_inference_request_duration_us"][labels] += total_s * 1e6
            self._nv["nv_inference_queue_duration_us"][labels] += queue_s * 1e6
            self._nv["nv_inference_compute_infer_duration_us"][labels] += compute_s * 1e6

    def failed(self, model: str, reason: str, *, total_s: float) -> None:
        with self._lock:
            self._nv["nv_inference_request_failure"][(model, VERSION, reason)] += 1
            self._nv["nv_inference_request_duration_us"][(model, VERSION)] += total_s * 1e6

    def render(self) -> bytes:
        with self._lock:
            lines = []
            for name, (kind, help_text) in _NV.items():
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
                keys = ("model", "version", "reason") if name == "nv_inference_request_failure" else ("model", "version")
                for labels, value in sorted(self._nv[name].items()):
                    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(keys, labels))
                    lines.append(f"{name}{{{inner}}} {value:.17g}")
        return ("\n".join(lines) + "\n").encode() + generate_latest(self.registry)


class ZooCollector:
    """The zoo's own figures, read when Prometheus scrapes."""

    def __init__(self, zoo) -> None:
        self.zoo = zoo

    def collect(self):
        zoo = self.zoo
        summary = zoo.metrics.summary()
        for name, key, text in (("gfedge_selections", "selections", "Requests a model was chosen for"),
                                ("gfedge_hits", "hits", "Choices of a model that was resident already"),
                                ("gfedge_swaps", "swaps", "Loads made for a request"),
                                ("gfedge_evictions", "evictions", "Models unloaded to make room"),
                                ("gfedge_prefetches", "prefetches", "Loads made for a prefetch hint"),
                                ("gfedge_explicit_loads", "explicit_loads", "Loads asked for through the repository extension"),
                                ("gfedge_model_failures", "failures", "Load or run failures that moved a request on to the next candidate"),
                                ("gfedge_fallbacks", "fallbacks", "Choices where sage passed over a low-trust winner"),
                                ("gfedge_request_errors", "errors", "Zoo requests that ended in an error")):
            yield CounterMetricFamily(name, text, value=summary[key])
        for name, value, text in (("gfedge_budget_bytes", zoo.budget_bytes, "The memory budget"),
                                  ("gfedge_accounted_bytes", zoo.accounted_bytes(), "Bytes the resident models count against the budget"),
                                  ("gfedge_measured_bytes", zoo.measured_bytes(), "Process memory measured above the baseline"),
                                  ("gfedge_low_power", int(zoo.low_power), "1 in the low-power state")):
            yield GaugeMetricFamily(name, text, value=value)
        entries = zoo.state.entries()
        resident = GaugeMetricFamily("gfedge_model_resident_bytes", "What a resident model counts against the budget (0 when not resident)", labels=["model"])
        estimate = GaugeMetricFamily("gfedge_model_estimate_bytes", "The manifest's estimate: bytes of the model files", labels=["model"])
        state = GaugeMetricFamily("gfedge_model_state", "1 for the state each model is in", labels=["model", "state"])
        loads = CounterMetricFamily("gfedge_model_loads", "Loads of each model", labels=["model"])
        hits = CounterMetricFamily("gfedge_model_hits", "Requests that found the model resident", labels=["model"])
        evictions = CounterMetricFamily("gfedge_model_evictions", "Times each model was unloaded to make room", labels=["model"])
        for entry in entries:
            resident.add_metric([entry.id], zoo.state.cost(entry) if entry.state == RESIDENT else 0)
            estimate.add_metric([entry.id], entry.estimate_bytes)
            for name in (REGISTERED, LOADING, RESIDENT, QUARANTINED):
                state.add_metric([entry.id, name], int(entry.state == name))
            loads.add_metric([entry.id], entry.loads)
            hits.add_metric([entry.id], entry.hits)
            evictions.add_metric([entry.id], entry.evictions)
        yield from (resident, estimate, state, loads, hits, evictions)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
