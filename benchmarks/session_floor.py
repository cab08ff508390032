"""What one more session costs the process: RSS, private (RssAnon) and file-backed (RssFile) growth over its load and
its first calls, measured after another session already faulted onnxruntime's own code pages in.

    python benchmarks/session_floor.py BUNDLE [BUNDLE ...] [--primer BUNDLE] [--calls 5]

Each bundle in a fresh process (one line each): the load's growth is the session's own weights plus its
structures, without the library's code that every session shares. The primer defaults to the first bundle.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import MIB, uptime  # noqa: E402

FIELDS = ("VmRSS", "RssAnon", "RssFile")


def measure(bundle: str, primer: str, calls: int) -> dict:
    """In this process: load `primer` and run it once, then load `bundle` and run it `calls` times."""
    from geofractal_edge.backends.bench_worker import batch_feeds
    from geofractal_edge.backends.initializers import graph_weight_bytes
    from geofractal_edge.backends.process import status_bytes
    from geofractal_edge.runtimes import load

    primed = load(primer)
    feeds, key = batch_feeds(primed.bundle, 1)
    primed.run(feeds, key=key)
    before = status_bytes(*FIELDS)
    session = load(bundle)
    loaded = status_bytes(*FIELDS)
    feeds, key = batch_feeds(session.bundle, 1)
    for _ in range(calls):
        session.run(feeds, key=key)
    warm = status_bytes(*FIELDS)
    return {"bundle": bundle, "weights": graph_weight_bytes(Path(bundle) / "model.onnx"),
            "load": {f: loaded[f] - before[f] for f in FIELDS}, "calls": {f: warm[f] - loaded[f] for f in FIELDS}}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--primer", help="the bundle loaded first (default: the first bundle)")
    parser.add_argument("--calls", type=int, default=5, help="batch-1 calls after the load (default: %(default)s)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this bundle in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.primer or args.one, args.calls)))
        return
    print(f"{uptime()}; growth in MiB: RSS / private / file-backed")
    print(f"{'bundle':<60} {'weights':>8} {'load':>22} {'calls':>22}")
    for bundle in args.bundles:
        out = subprocess.run([sys.executable, __file__, "x", "--one", bundle, "--primer", args.primer or args.bundles[0],
                              "--calls", str(args.calls)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        cols = [" / ".join(f"{r[k][f] / MIB:.2f}" for f in FIELDS) for k in ("load", "calls")]
        print(f"{bundle[-60:]:<60} {r['weights'] / MIB:>8.2f} {cols[0]:>22} {cols[1]:>22}")


if __name__ == "__main__":
    main(sys.argv[1:])
