"""Per-operator time of bundles under onnxruntime's profiler: where a TriX bundle's latency goes.

    python benchmarks/trix_wide_profile.py BUNDLE [BUNDLE ...] [--batch 1] [--threads 1] [--runs 20] [--config KEY=VALUE]

Each bundle's model.onnx runs in this process, under the session settings the runtime gives it (its target's
runtime settings: the lookup-table 2-bit kernel where the bundle records it), with onnxruntime's session profiling on (the bundle's
first golden case, sliced or tiled to --batch); node events are summed per operator type over the
timed runs (3 warm-up runs left out) and printed as microseconds per run and share of the node total.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path


def op_times(bundle, options, *, batch: int, runs: int, warmup: int) -> tuple[dict[str, float], int]:
    """({op type: microseconds per run}, node count) of an opened bundle under onnxruntime's profiler.

    `options`: the onnxruntime.SessionOptions to run with (profiling is switched on here). The
    session makes `warmup` + `runs` runs of the first golden case at `batch` (its key vector fed
    where the graph has a key input) and only the node events of the last `runs` are counted:
    `warmup=0` counts the first, cold run in the average; 1 or more leaves the warm-up out.
    """
    import onnxruntime as ort

    from geofractal_edge.backends.onnxruntime.placement import golden_feeds

    feeds = golden_feeds(bundle, batch=batch)
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "prof")
        session = ort.InferenceSession(str(bundle.model_path), options, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs_at = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    first_timed = runs_at[warmup][0]  # node events of the warm-up runs end before the first timed run starts
    totals: dict[str, float] = defaultdict(float)
    nodes = set()
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time") or event["ts"] < first_timed:
            continue
        nodes.add(event["name"])
        totals[event.get("args", {}).get("op_name", "?")] += event["dur"]
    return {op: t / runs for op, t in totals.items()}, len(nodes)


def bundle_options(bundle, threads: int, config: dict[str, str]):
    """The SessionOptions the runtime gives `bundle` (its target's runtime settings, lut_gemm included) at `threads`
    intra-op threads, plus the session config entries `config`. Its `mmap_threshold_kib`, glibc's and not the session's,
    is applied to the process as for every session the runtime makes (`loader.prepared_options`: the first value holding)."""
    from geofractal_edge.backends.onnxruntime.loader import prepared_options

    settings = bundle.manifest.target.runtime.but(intra_op_threads=threads)
    options = prepared_options(settings, asked_by=f"bundle '{bundle.path.name}'")
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    return options


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="a session config entry on top of the bundle's own, e.g. mlas.use_lut_gemm=0")
    args = parser.parse_args(argv)
    from geofractal_edge.artifacts import open_bundle

    print(f"onnxruntime profiler, batch {args.batch}, {args.threads} thread(s), {args.runs} runs; load average {os.getloadavg()[0]:.2f}")
    config = dict(entry.split("=", 1) for entry in args.config)
    for path in args.bundles:
        bundle = open_bundle(path)
        times, nodes = op_times(bundle, bundle_options(bundle, args.threads, config), batch=args.batch, runs=args.runs, warmup=3)
        total = sum(times.values())
        top = sorted(times.items(), key=lambda kv: -kv[1])[: args.top]
        print(f"{path}: {nodes} nodes, {total:,.0f} us of node time per run{'; ' + str(config) if config else ''}")
        for op, us in top:
            print(f"    {op:<28} {us:>10,.0f} us {us / total:>6.1%}")


if __name__ == "__main__":
    main(sys.argv[1:])
