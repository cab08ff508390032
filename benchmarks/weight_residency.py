"""Weight bytes, resident memory and latency of bundles under plain onnxruntime, each in a fresh process.

    python benchmarks/weight_residency.py BUNDLE [BUNDLE ...] [--runs 50] [--threads 1] [--batch N]

Per bundle: the bytes of the graph's initializers (`graph_weight_bytes`: as stored, INT4 at half a
byte, packed uint8 as is, external 2-bit codes by their declared length), the process's resident
memory after the session is created and after the first run, minus what it was before (numpy and
onnxruntime imported), the peak, and the median latency of the first golden case (`--batch N`: its
leading dynamic dimension sliced or tiled to N, as `gfedge bench` does). A bundle with external
2-bit TriX codes gets them handed over as the runtime does. What `gfedge bench` does not measure:
the session has onnxruntime's default options (not the target's runtime settings, no heap trim
after the load), and the peak counts the session's creation, not only the calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _report import MIB


def measure(path: Path, runs: int, threads: int, batch: int) -> dict[str, float]:
    """{load, run, peak: bytes over the RSS before the session; ms: median latency} of one bundle, in this process."""
    import onnxruntime as ort

    from geofractal_edge.artifacts import open_bundle
    from geofractal_edge.backends.onnxruntime.placement import golden_feeds
    from geofractal_edge.backends.process import peak_rss_bytes, reset_peak_rss, rss_bytes

    bundle = open_bundle(path)
    feeds = golden_feeds(bundle, batch=batch or None)  # 0: the case as recorded
    codes = {name: ort.OrtValue.ortvalue_from_numpy(c) for name, c in bundle.ternary_codes().items()}
    before = rss_bytes()
    reset_peak_rss()  # the peak from here on: session creation and the first run, not the imports before them
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if codes:
        options.add_external_initializers(list(codes), list(codes.values()))
    session = ort.InferenceSession(str(bundle.model_path), options, providers=["CPUExecutionProvider"])
    loaded = rss_bytes()
    session.run(None, feeds)
    ran, peak = rss_bytes(), peak_rss_bytes()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return {"load": loaded - before, "run": ran - before, "peak": peak - before, "ms": 1000 * statistics.median(times)}


def main() -> None:
    from geofractal_edge.backends.initializers import graph_weight_bytes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=0, help="rows along the first dynamic axis (0: the golden case's)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # measure the one bundle in this process, print JSON
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.bundles[0], args.runs, args.threads, args.batch)))
        return
    print(f"{'bundle':42s} {'weights B':>11s} {'load MiB':>9s} {'run MiB':>8s} {'peak MiB':>9s} {'median ms':>10s}")
    for bundle in args.bundles:
        child = [sys.executable, __file__, "--child", str(bundle), "--runs", str(args.runs), "--threads", str(args.threads), "--batch", str(args.batch)]
        m = json.loads(subprocess.run(child, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        print(f"{str(bundle)[-42:]:42s} {graph_weight_bytes(bundle / 'model.onnx'):>11,d} {m['load'] / MIB:>9.2f} {m['run'] / MIB:>8.2f} "
              f"{m['peak'] / MIB:>9.2f} {m['ms']:>10.3f}")


if __name__ == "__main__":
    main()
