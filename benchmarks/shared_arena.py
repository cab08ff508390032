"""Many sessions in one process, as in a zoo: one CPU arena per session, or one arena shared by all.

onnxruntime gives every session its own CPU arena; a buffer one session freed is kept for that
session only. A zoo holds several sessions at once, so each keeps its own activation high-water
mark. With `shared_arena` (onnxruntime's environment allocator, registered once per process, and
`session.use_env_allocators`), the sessions draw activations from one arena.

For each setting, a fresh process loads every bundle given, runs each at its declared min and opt
batch (its warm-up), and reports resident memory grown by the loads and after the warm-up; then
times batch-1 runs round-robin over the bundles. The settings alternate process by process,
`--repeats` times, and the medians are printed with their ratio to the per-session arenas.

    python benchmarks/shared_arena.py BUNDLE [BUNDLE ...] [--repeats 3] [--runs 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _report import MIB

SETTINGS = {"per-session arenas": False, "shared arena": True}

WORKER = """
import json, sys, time
from geofractal_edge.artifacts import open_bundle
from geofractal_edge.backends.onnxruntime.placement import batch_feeds
from geofractal_edge.backends.inputs import leading_dim
from geofractal_edge.backends.process import heap_bytes, rss_bytes
from geofractal_edge.backends.lazy import require
from geofractal_edge.backends.onnxruntime import Session
require("onnxruntime")
args = json.loads(sys.argv[1])
bundles = [open_bundle(p) for p in args["paths"]]
feeds = []
for b in bundles:
    _, least, opt, _ = leading_dim(b.manifest.graph)
    feeds.append({n: batch_feeds(b, n) for n in sorted({least, opt, 1})})
rss0, heap0 = rss_bytes(), heap_bytes()
sessions = [Session(b, shared_arena=args["shared"], intra_op_threads=args["threads"]) for b in bundles]
rss_load = rss_bytes() - rss0
for s, f in zip(sessions, feeds):
    for data, key in f.values():
        if key is not None:
            s.use_key(key)
        for _ in range(3):
            s.run(data)
rss_warm, heap_warm = rss_bytes() - rss0, heap_bytes() - heap0
times = [[] for _ in sessions]
for _ in range(args["runs"]):
    for i, (s, f) in enumerate(zip(sessions, feeds)):
        data, key = f[1]
        if key is not None and s.active_key != key:
            s.use_key(key)
        t = time.perf_counter_ns(); s.run(data); times[i].append(time.perf_counter_ns() - t)
print(json.dumps({"rss_load": rss_load, "rss_warm": rss_warm, "heap_warm": heap_warm, "times": times}))
"""


def run_once(paths: list[str], shared: bool, runs: int, threads: int) -> dict:
    request = json.dumps({"paths": paths, "shared": shared, "runs": runs, "threads": threads})
    done = subprocess.run([sys.executable, "-c", WORKER, request], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"error: the worker failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    paths = [str(p) for p in args.bundles]
    start = os.getloadavg()[0]
    results: dict[str, list[dict]] = {label: [] for label in SETTINGS}
    for r in range(args.repeats):
        for label, shared in SETTINGS.items():
            results[label].append(run_once(paths, shared, args.runs, args.threads))
            print(f"  repeat {r + 1}/{args.repeats}: {label} done", file=sys.stderr)
    end = os.getloadavg()[0]
    print(f"{len(paths)} sessions in one process, {args.threads} intra-op thread(s), medians of {args.repeats} fresh processes per setting, "
          f"alternating; batch-1 p50 over {args.runs} round-robin runs per bundle; load average {start:.2f} -> {end:.2f}")
    base = None
    for label, rows in results.items():
        rss_load = statistics.median(r["rss_load"] for r in rows) / MIB
        rss_warm = statistics.median(r["rss_warm"] for r in rows) / MIB
        heap = statistics.median(r["heap_warm"] for r in rows) / MIB
        p50 = [statistics.median(statistics.median(r["times"][i]) for r in rows) / 1e3 for i in range(len(paths))]
        if base is None:
            base = (rss_warm, p50)
        ratio = statistics.median(p / b for p, b in zip(p50, base[1]))
        print(f"{label:>20}: RSS load {rss_load:7.2f} MiB, RSS warm {rss_warm:7.2f} MiB (x{rss_warm / base[0]:.3f}), heap warm {heap:7.2f} MiB, "
              f"batch-1 p50 median ratio over bundles x{ratio:.3f}")
    for i, path in enumerate(paths):
        cells = [f"{statistics.median(statistics.median(r['times'][i]) for r in rows) / 1e3:,.1f} us" for rows in results.values()]
        print(f"  {Path(path).name}: batch-1 p50 " + " / ".join(cells))


if __name__ == "__main__":
    main()
