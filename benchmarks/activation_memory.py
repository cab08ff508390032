"""Memory between calls: onnxruntime's CPU arena against buffers handed back after every call.

With its arena on, an onnxruntime session keeps the largest call's activation buffers for reuse:
after one call at the typical batch a weight-dominated model holds 2-4x its weights (atlas-wide
at 2048 positions: 291 MiB for 70 MiB of weights), the same at every precision. With the arena
off, glibc's own mmap threshold rises to each freed buffer's size (up to 32 MiB) and keeps
buffers of that size in the heap; with the threshold fixed (`mmap_threshold_kib`), every large
buffer is unmapped when the call frees it and the process holds the weights again.

For each weight-dominated bundle of benchmarks/weight_dominated.py (export stage first) and each
setting below (or those named by --settings), one `backends.bench` run side by side: p50 at batch 1 and at the family's typical
batch, resident memory after warm-up (between calls), the calls' high-water mark (what a call
needs) and the private part (RssAnon). Ratios are to the first setting in the same run (the arena, unless
--settings names another first).

Usage: python benchmarks/activation_memory.py [--threads 1 2] [--runs 60] [--runs-typical 3] [--models ...]
       [--precisions ...] [--settings LABEL ...]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from geofractal_edge.backends.bench import Subject

from _report import MIB, load_span, uptime
from weight_dominated import MODELS, PRECISIONS, ROOT, batch_plan, bench_at, bundle_dir

SETTINGS = {
    "arena": {"cpu_mem_arena": True, "arena_shrinkage": False, "mmap_threshold_kib": 0},
    "arena, shrink": {"cpu_mem_arena": True, "arena_shrinkage": True, "mmap_threshold_kib": 0},
    "arena, shrink, mmap": {"cpu_mem_arena": True, "arena_shrinkage": True, "mmap_threshold_kib": 256},
    "no arena, mmap": {"cpu_mem_arena": False, "arena_shrinkage": False, "mmap_threshold_kib": 256},
    # handed back only after calls above batch 1 (shrink_above_batch, with malloc_trim after them since 5062ddb's
    # successor): batch-1 calls keep theirs in the arena
    "shrink>1": {"cpu_mem_arena": True, "arena_shrinkage": False, "shrink_above_batch": 1, "mmap_threshold_kib": 0},
    "shrink>1, mmap": {"cpu_mem_arena": True, "arena_shrinkage": False, "shrink_above_batch": 1, "mmap_threshold_kib": 256},
    "shrink>1, mmap 4M": {"cpu_mem_arena": True, "arena_shrinkage": False, "shrink_above_batch": 1, "mmap_threshold_kib": 4096},
}


def print_report(name: str, precision: str, batch: int, threads: int, report: dict) -> None:
    for s in report["subjects"]:
        t, r = s["batches"][0], s["ratios_to_first"]
        print(f"{name:16s} {precision:5s} {threads:>3d} {batch:>5d} {s['label']:20s} {t['p50_us'] / 1e3:>10.3f} {r[f'p50@{batch}']:>6.3f} "
              f"{s['rss_warm_bytes'] / MIB:>8.1f} {r['rss_warm_bytes']:>6.3f} {s['rss_peak_bytes'] / MIB:>8.1f} {r['rss_peak_bytes']:>6.3f} "
              f"{s['anon_warm_bytes'] / MIB:>8.1f} {s['weight_bytes'] / MIB:>8.2f}  {load_span(report['machine'], '-')}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "weight_dominated")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--runs", type=int, default=60, help="timed runs per setting at batch 1")
    parser.add_argument("--runs-typical", type=int, default=3, help="timed runs per setting at the typical batch")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS), help="these settings only (ratios to the first)")
    args = parser.parse_args()
    chosen = {label: SETTINGS[label] for label in args.settings}
    print(f"start: {uptime()}; settings: {json.dumps(chosen)}")
    print(f"{'model':16s} {'prec':5s} {'thr':>3s} {'batch':>5s} {'setting':20s} {'p50 ms':>10s} {'p50 x':>6s} {'warm MiB':>8s} {'x':>6s} "
          f"{'peak MiB':>8s} {'x':>6s} {'priv MiB':>8s} {'weights':>8s}  load")
    reports = {}
    for name in args.models:
        for precision in args.precisions:
            subjects = [Subject(bundle_dir(args.work, name, precision), label, settings) for label, settings in chosen.items()]
            for threads in args.threads:
                for batch, runs, warmup in batch_plan(name, args.runs, args.runs_typical):
                    report = bench_at(subjects, batch=batch, threads=threads, runs=runs, warmup=warmup)
                    reports[f"{name}/{precision}/{threads}/{batch}"] = report
                    print_report(name, precision, batch, threads, report)
    (args.work / "activation_memory.json").write_text(json.dumps(reports, indent=1))
    print(f"end: {uptime()}; reports in {os.path.relpath(args.work / 'activation_memory.json', ROOT)}")


if __name__ == "__main__":
    main()
