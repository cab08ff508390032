"""Measure bundles side by side: latency, throughput, load time, resident memory, weight bytes.

`bench(subjects)` measures several bundles (or one bundle under several runtime settings) in one
run and returns a `BenchReport` with one `BundleBench` per subject; `measure(path)` is the same for
one bundle (what a cost estimate wants); `prepare` then `run` is the same in two steps, every
bundle checked before anything runs. Each subject loads in a fresh worker process of its own
(`bench_worker.py`), so one bundle's memory never shows in another's numbers: resident memory
(VmRSS) is read before the load, after it and after warm-up (what stays between calls), with the
warm-up calls' high-water mark (what a call needs), the private part of each (RssAnon: without the
shared library code pages a first session touches) and glibc's heap in use beside them. Then the
worker releases that session and loads the bundle again: the second load's growth is the model's
own cost (`model_*`), without what a process's first session pays once (`runtime_once_bytes`).
The timed runs go round-robin over the workers, a chunk at a time, so
machine noise hits every subject alike; inside a chunk each `Runner.run` alternates with a bare
`InferenceSession.run` of the same session; the median of the pairs' ratios is the runtime's own overhead.
Inputs are the bundle's first golden case, its leading dynamic dimension sliced or tiled to each
batch; default batches: that dimension's declared min and opt. No torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geofractal_edge.artifacts import Bundle, open_bundle
from geofractal_edge.backends.bench_worker import TAG
from geofractal_edge.backends.inputs import leading_dim
from geofractal_edge.backends.lazy import installed_version
from geofractal_edge.backends.initializers import graph_weight_bytes
from geofractal_edge.errors import Bug, GfedgeError
from geofractal_edge.targets.hugepages import hugepages_asked

@dataclass(frozen=True)
class Subject:
    """One thing to measure: a bundle, with runtime settings overridden by name (`{"prepacking": False}`)."""

    path: Path
    label: str = ""
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BatchTiming:
    batch: int
    runs: int
    p50_us: float
    p99_us: float
    items_per_s: float  # batch x runs / their total time
    bare_p50_us: float  # the same session through onnxruntime.InferenceSession.run, interleaved
    # Runner.run's cost over a bare run of the same session, minus 1: the median over call pairs of the runner's time over
    # the bare run's beside it. Each pair ran back to back, so the machine's drift between chunks cancels in it; the two
    # p50s come from separate distributions (atlas-wide int8 at 60 calls, four runs: +0.1% to +3.0% this way, -0.5% to
    # +8.7% as the p50s' ratio; benchmarks/RESULTS.md).
    overhead: float


@dataclass(frozen=True)
class BundleBench:
    """One subject's numbers; the memory and timing a cost estimate needs."""

    label: str
    path: str
    family: str
    precision: str
    target: str
    settings: dict  # the runtime settings the session ran with
    weight_bytes: int  # initializers (external data included), as the graph declares them
    open_seconds: float  # open_bundle: every file hash-checked
    load_seconds: float  # the Session: providers, keys, the onnxruntime session
    rss_before_bytes: int | None  # VmRSS with onnxruntime imported and the bundle opened
    rss_load_bytes: int | None  # growth over rss_before after the load
    rss_warm_bytes: int | None  # growth over rss_before after warm-up at every batch: what stays between calls
    rss_peak_bytes: int | None  # the warm-up calls' resident high-water mark, over rss_before: what a call needs
    anon_load_bytes: int | None  # the private part of rss_load (RssAnon): without the library code pages the first session touches
    anon_warm_bytes: int | None  # the private part of rss_warm
    heap_load_bytes: int | None  # glibc malloc in use, growth after the load (None off glibc)
    heap_warm_bytes: int | None
    batches: tuple[BatchTiming, ...]
    # The same bundle loaded again in the same worker, the first session released and the heap trimmed: the model's own
    # cost, without what only a process's first session pays (onnxruntime's code pages, environment, kernel registry).
    # What one more resident model adds, as the zoo measures it; the timed runs use this session. None: no /proc to read.
    reload_seconds: float
    model_load_bytes: int | None
    model_warm_bytes: int | None

    @property
    def runtime_once_bytes(self) -> int | None:
        """What the first session cost beyond the model's own (rss_warm - model_warm): paid once per process."""
        return None if self.rss_warm_bytes is None or self.model_warm_bytes is None else self.rss_warm_bytes - self.model_warm_bytes

    def timing(self, batch: int) -> BatchTiming | None:
        return next((t for t in self.batches if t.batch == batch), None)


@dataclass(frozen=True)
class BenchReport:
    subjects: tuple[BundleBench, ...]
    runs: int
    machine: dict  # cpu, cores, python, numpy, onnxruntime, load average at start and end

    def ratios(self) -> list[dict]:
        """Each subject's numbers over the first's (None where the first lacks that batch or a number)."""
        first = self.subjects[0]
        out = []
        for s in self.subjects:
            row = {k: _ratio(getattr(s, k), getattr(first, k)) for k in ("weight_bytes", "load_seconds", "rss_load_bytes", "rss_warm_bytes", "rss_peak_bytes",
                                                             "anon_load_bytes", "anon_warm_bytes", "model_load_bytes", "model_warm_bytes")}
            for t in s.batches:
                base = first.timing(t.batch)
                row[f"p50@{t.batch}"] = _ratio(t.p50_us, base.p50_us if base else None)
                row[f"items_per_s@{t.batch}"] = _ratio(t.items_per_s, base.items_per_s if base else None)
            out.append(row)
        return out

    def to_dict(self) -> dict:
        subjects = []
        for s, ratio in zip(self.subjects, self.ratios()):
            data = dataclasses.asdict(s)
            data["runtime_once_bytes"] = s.runtime_once_bytes
            subjects.append({**data, "ratios_to_first": ratio})
        return {"runs": self.runs, "machine": self.machine, "subjects": subjects}


@dataclass(frozen=True)
class Plan:
    """A subject checked and ready to measure: its bundle opened, its batches and settings settled."""

    subject: Subject
    bundle: Bundle
    label: str
    batches: tuple[int, ...]
    settings: dict
    weight_bytes: int


def measure(path: Path | str, **options) -> BundleBench:
    """One bundle's numbers (options as `bench`'s): what the zoo's cost estimates can use."""
    return bench([Subject(Path(path))], **options).subjects[0]


def bench(subjects: Sequence[Subject | Path | str], *, batches: Sequence[int] | None = None, threads: int | None = None,
          runs: int = 200, warmup: int = 10, progress=None) -> BenchReport:
    """`run(prepare(subjects, ...), ...)`: measure every subject, side by side."""
    return run(prepare(subjects, batches=batches, threads=threads), runs=runs, warmup=warmup, progress=progress)


def prepare(subjects: Sequence[Subject | Path | str], *, batches: Sequence[int] | None = None, threads: int | None = None) -> list[Plan]:
    """Open and check every bundle before anything runs; a bad path, batch or setting is one line.

    `batches`: sizes of the leading dynamic dimension (default: its declared min and opt per
    bundle). `threads`: intra-op threads for every subject (default: each target's setting).
    """
    subjects = [s if isinstance(s, Subject) else Subject(Path(s)) for s in subjects]
    if not subjects:
        raise GfedgeError("no bundle to measure", "pass one or more bundle directories")
    return [_plan(s, batches, threads) for s in subjects]


def run(plans: Sequence[Plan], *, runs: int = 200, warmup: int = 10, progress=None) -> BenchReport:
    """Load each plan in a worker of its own, then time the runs round-robin over the workers.

    `progress(phase, done, total)` is called as the work goes.
    """
    if runs < 1 or warmup < 0:
        raise GfedgeError(f"runs {runs} and warm-up {warmup} make no measurement", "pass --runs 1 or more")
    machine = _machine()
    workers = [_Worker(plan.label) for plan in plans]
    try:
        loaded = []
        for i, (worker, plan) in enumerate(zip(workers, plans)):
            loaded.append(worker.ask({"op": "load", "path": str(plan.bundle.path), "settings": plan.settings, "batches": list(plan.batches), "warmup": warmup}))
            if progress:
                progress("load", i + 1, len(workers))
        times = [{b: ([], []) for b in plan.batches} for plan in plans]
        rounds, done = min(runs, 25), 0
        for r in range(rounds):
            chunk = runs * (r + 1) // rounds - runs * r // rounds
            for worker, plan, got in zip(workers, plans, times):
                for b in plan.batches:
                    answer = worker.ask({"op": "time", "batch": b, "runs": chunk})
                    got[b][0].extend(answer["runner_ns"])
                    got[b][1].extend(answer["bare_ns"])
            done += chunk
            if progress:
                progress("timed runs", done, runs)
    finally:
        for worker in workers:
            worker.close()
    machine["load_average_end"] = list(os.getloadavg())
    results = tuple(_result(plan, info, got) for plan, info, got in zip(plans, loaded, times))
    return BenchReport(subjects=results, runs=runs, machine=machine)


def _plan(subject: Subject, batches: Sequence[int] | None, threads: int | None) -> Plan:
    bundle = open_bundle(Path(subject.path))  # a bad path or bundle is one line, before any worker
    dim, low, opt, high = leading_dim(bundle.manifest.graph)
    wanted = tuple(sorted(set(batches))) if batches else tuple(sorted({low, opt}))
    for b in wanted:
        if not low <= b <= high:
            raise GfedgeError(f"batch {b} is outside {bundle.path.name}'s declared {dim} range {low}..{high}", f"pass --batch within {low}..{high}")
    settings = dict(subject.settings)
    if threads is not None:
        if "intra_op_threads" in settings:
            raise GfedgeError("both --threads and --set intra_op_threads name the thread count", "pass one of them")
        settings["intra_op_threads"] = threads
    bundle.manifest.target.runtime.but(**settings)  # an unknown setting is refused here, not in a worker
    return Plan(subject=subject, bundle=bundle, label=subject.label or bundle.path.name, batches=wanted, settings=settings,
                weight_bytes=graph_weight_bytes(bundle.model_path))


def _result(plan: Plan, info: dict, got: dict) -> BundleBench:
    timings = []
    for b in plan.batches:
        runner, bare = (np.asarray(v, dtype=np.float64) / 1e3 for v in got[b])
        timings.append(BatchTiming(batch=b, runs=len(runner), p50_us=float(np.percentile(runner, 50)), p99_us=float(np.percentile(runner, 99)),
                                   items_per_s=b * len(runner) / (runner.sum() / 1e6), bare_p50_us=float(np.percentile(bare, 50)),
                                   overhead=float(np.median(runner / bare)) - 1))
    manifest = plan.bundle.manifest
    return BundleBench(
        label=plan.label, path=str(plan.bundle.path), family=manifest.family, precision=manifest.precision, target=manifest.target.name,
        settings=info["settings"], weight_bytes=plan.weight_bytes, open_seconds=info["open_seconds"], load_seconds=info["load_seconds"],
        rss_before_bytes=info["rss"][0], rss_load_bytes=_delta(info["rss"], 1), rss_warm_bytes=_delta(info["rss"], 2),
        rss_peak_bytes=_delta([info["rss"][0], info["rss_peak"]], 1),
        anon_load_bytes=_delta(info["anon"], 1), anon_warm_bytes=_delta(info["anon"], 2),
        heap_load_bytes=_delta(info["heap"], 1), heap_warm_bytes=_delta(info["heap"], 2), batches=tuple(timings),
        **_again(info["again"]),
    )


def _again(again: dict) -> dict:
    """The second load's fields."""
    return {"reload_seconds": again["load_seconds"], "model_load_bytes": _delta(again["rss"], 1), "model_warm_bytes": _delta(again["rss"], 2)}


class _Worker:
    """A fresh interpreter that loads one subject and answers one JSON line per request."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.process = subprocess.Popen([sys.executable, "-m", "geofractal_edge.backends.bench_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, bufsize=1)

    def ask(self, request: dict) -> dict:
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            for line in self.process.stdout:
                if line.startswith(TAG):
                    answer = json.loads(line[len(TAG):])
                    if "error" in answer:
                        raise GfedgeError(answer["error"], answer.get("fix", ""))
                    return answer
        except BrokenPipeError:
            pass
        tail = self.process.stderr.read()[-2000:] if self.process.poll() is not None else ""
        raise Bug(f"the bench worker for {self.label} stopped (exit {self.process.poll()}): {tail.strip()}")

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            stream.close()


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": installed_version("onnxruntime"), "load_average_start": list(os.getloadavg()),
            "malloc_hugepages": hugepages_asked()}  # the workers inherit this process's environment


def _delta(values: list, i: int) -> int | None:
    return None if values[0] is None or values[i] is None else values[i] - values[0]


def _ratio(value, base) -> float | None:
    if value is None or base is None or base == 0 or (isinstance(base, float) and not math.isfinite(base)):
        return None
    return value / base


