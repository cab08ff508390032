"""Per-operator time of bundles under onnxruntime's profiler: where a TriX bundle's latency goes.

    python benchmarks/trix_wide_profile.py BUNDLE [BUNDLE ...] [--batch 1] [--threads 1] [--runs 20] [--config KEY=VALUE]

Each bundle's model.onnx runs in this process with onnxruntime's session profiling on (the bundle's
first golden case, sliced or tiled to --batch); node events are summed per operator type over the
timed runs (warm-up excluded) and printed as microseconds per run and share of the node total.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path


def op_times(bundle_dir: Path, *, batch: int, threads: int, runs: int, warmup: int = 3, config: dict[str, str] | None = None) -> tuple[dict[str, float], int]:
    """({op type: microseconds per run}, node count) of one bundle."""
    import onnxruntime as ort

    from geofractal_edge.artifacts import open_bundle
    from geofractal_edge.backends.bench_worker import batch_feeds

    bundle = open_bundle(bundle_dir)
    feeds, _ = batch_feeds(bundle, batch)
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "prof")
        for key, value in (config or {}).items():
            options.add_session_config_entry(key, value)
        session = ort.InferenceSession(str(bundle.model_path), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        for _ in range(warmup + runs):
            session.run(names, feeds)
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


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="a session config entry, e.g. mlas.use_lut_gemm=1")
    args = parser.parse_args(argv)
    print(f"onnxruntime profiler, batch {args.batch}, {args.threads} thread(s), {args.runs} runs; load average {os.getloadavg()[0]:.2f}")
    for path in args.bundles:
        config = dict(entry.split("=", 1) for entry in args.config)
        times, nodes = op_times(path, batch=args.batch, threads=args.threads, runs=args.runs, config=config)
        total = sum(times.values())
        top = sorted(times.items(), key=lambda kv: -kv[1])[: args.top]
        print(f"{path}: {nodes} nodes, {total:,.0f} us of node time per run")
        for op, us in top:
            print(f"    {op:<28} {us:>10,.0f} us {us / total:>6.1%}")


if __name__ == "__main__":
    main(sys.argv[1:])
