"""Weight bytes, resident memory and latency of bundles, each in a fresh process.

    python benchmarks/weight_residency.py BUNDLE [BUNDLE ...] [--runs 50] [--threads 1] [--batch N]
    python benchmarks/weight_residency.py --primer BUNDLE BUNDLE [BUNDLE ...] [--calls 5] [--batch N]

Per bundle, under plain onnxruntime: the bytes of the graph's initializers (`graph_weight_bytes`: as stored,
INT4 at half a byte, packed uint8 as is, external 2-bit codes by their declared length), the process's resident
memory after the session is created and after the first run, minus what it was before (numpy and onnxruntime
imported), the peak, and the median latency of the first golden case (`--batch N`: its leading dynamic
dimension sliced or tiled to N, as `gfedge bench` does; 0, the default: the case as recorded). A bundle with
external 2-bit TriX codes gets them handed over as the runtime does. What `gfedge bench` does not measure: the
session has onnxruntime's default options (not the target's runtime settings, no heap trim after the load),
and the peak counts the session's creation, not only the calls.

`--primer BUNDLE`: what one more session costs the process. The primer is loaded through the runtime
(`runtimes.load`, the target's settings) and run once, faulting onnxruntime's own code pages in; then each
bundle is loaded the same way and run `--calls` times (batch 1 unless `--batch` says otherwise). Printed: the
growth in MiB of RSS / private (RssAnon) / file-backed (RssFile) over the load and over the calls, so the
load's growth is the session's own weights plus its structures, without the library code every session shares.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _report import MIB, uptime
from _residency import growth_cells, in_fresh_process, primed_growth

FIELDS = ("VmRSS", "RssAnon", "RssFile")  # the columns of --primer: RSS / private / file-backed


def measure(path: Path, runs: int, threads: int, batch: int) -> dict[str, float]:
    """{load, run, peak: bytes over the RSS before the session; ms: median latency} of one bundle, in this process."""
    import onnxruntime as ort

    from geofractal_edge.artifacts import open_bundle
    from geofractal_edge.backends.onnxruntime.placement import golden_feeds
    from geofractal_edge.backends.process import peak_rss_bytes, reset_peak_rss, rss_bytes

    bundle = open_bundle(path)
    feeds = golden_feeds(bundle, batch=batch or None)
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


def _caller(session, batch: int):
    from geofractal_edge.backends.onnxruntime.placement import batch_feeds

    feeds, key = batch_feeds(session.bundle, batch)
    return lambda: session.run(feeds, key=key)


def measure_primed(path: Path, primer: Path, calls: int, batch: int) -> dict[str, dict[str, int]]:
    """{load, calls: {field: growth in bytes}} of one bundle loaded after `primer` was loaded and run once, in this process."""
    from geofractal_edge.runtimes import load

    return primed_growth(path, primer, open_session=load, caller=_caller, calls=calls, batch=batch or 1, fields=FIELDS)


def in_child(bundle: Path, args) -> dict:
    """This script's measurement of one bundle, made in a fresh process."""
    options = ["--runs", str(args.runs), "--threads", str(args.threads), "--batch", str(args.batch), "--calls", str(args.calls)]
    if args.primer is not None:
        options += ["--primer", str(args.primer)]
    return in_fresh_process(__file__, "--child", str(bundle), *options)


def main() -> None:
    from geofractal_edge.backends.initializers import graph_weight_bytes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=0, help="rows along the first dynamic axis (0: the golden case's; with --primer, 1)")
    parser.add_argument("--primer", type=Path, help="measure each bundle's load and calls after this bundle's session ran")
    parser.add_argument("--calls", type=int, default=5, help="with --primer: calls after the load (default: %(default)s)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # measure the one bundle in this process, print JSON
    args = parser.parse_args()
    if args.child:
        bundle = args.bundles[0]
        primed = args.primer is not None
        print(json.dumps(measure_primed(bundle, args.primer, args.calls, args.batch) if primed else measure(bundle, args.runs, args.threads, args.batch)))
        return
    if args.primer is not None:
        print(f"{uptime()}; primer {args.primer}; growth in MiB: RSS / private / file-backed")
        print(f"{'bundle':<60} {'weights':>8} {'load':>22} {'calls':>22}")
    else:
        print(f"{'bundle':42s} {'weights B':>11s} {'load MiB':>9s} {'run MiB':>8s} {'peak MiB':>9s} {'median ms':>10s}")
    for bundle in args.bundles:
        m, weights = in_child(bundle, args), graph_weight_bytes(bundle / "model.onnx")
        if args.primer is not None:
            cols = growth_cells(m, FIELDS)
            print(f"{str(bundle)[-60:]:<60} {weights / MIB:>8.2f} {cols[0]:>22} {cols[1]:>22}")
        else:
            print(f"{str(bundle)[-42:]:42s} {weights:>11,d} {m['load'] / MIB:>9.2f} {m['run'] / MIB:>8.2f} {m['peak'] / MIB:>9.2f} {m['ms']:>10.3f}")


if __name__ == "__main__":
    main()
