"""What the runner adds to a call at batch 1, part by part, interleaved in one process.

    .venv/bin/python benchmarks/runner_overhead.py [BUNDLE ...] [--threads 1] [--rounds 30] [--calls 300]

Default bundles: the shipped Atlas and collective defaults that benchmarks/weight_dominated.py exports
(.bench/weight_dominated/bundles/{atlas,collective}-default-fp32), the smallest calls, where the
runner's own microseconds show most. For each bundle, one session (the bundle's runtime settings,
`--threads` intra-op threads) and its first golden case cut to batch 1, timed five ways:

- keyed:    `session.run(data, key=NAME)`, naming the key every call (what a server does per request);
- bound:    `session.run(data)`, the key bound once before;
- C run:    what the runner calls after its checks (`Session.direct_runner`: onnxruntime's C session, `loader.direct_run`);
- bare:     `Session.bare_runner()`, onnxruntime's public `InferenceSession.run` with the key vector in the feeds
            (gfedge bench's baseline);
- run+check: a bare run, then the input check (how a runner meets it: caches cold from the run); printed
            minus a bare run, as "check us": the check's cost between runs.

Each round times every way for `--calls` calls in a Williams-design order (`geofractal_edge.backends.timing.interleaved`);
figures are medians over rounds of the per-call mean, in microseconds, with each way's ratio to bare.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from _bundles import keyed, require_bundle
from geofractal_edge.backends.timing import interleaved

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLES = [ROOT / ".bench" / "weight_dominated" / "bundles" / f"{name}-default-fp32" for name in ("atlas", "collective")]


def ways(bundle: Path, threads: int) -> dict:
    """{label: no-argument callable} for one bundle at batch 1."""
    from geofractal_edge.artifacts import open_bundle
    from geofractal_edge.backends.onnxruntime.placement import batch_feeds
    from geofractal_edge.runtimes import load

    opened = open_bundle(bundle)
    data, key = batch_feeds(opened, 1)
    session = load(bundle, intra_op_threads=threads)
    if key is not None:
        session.use_key(key)
    full = keyed(opened, data, key)
    bare, direct, check = session.bare_runner(), session.direct_runner(full), session._check_inputs
    outputs = opened.manifest.graph.output_names

    def check_after_run():
        bare(full)
        check(data)

    return {"keyed": lambda: session.run(data, key=key), "bound": lambda: session.run(data),
            "C run": lambda: direct(outputs, full), "bare": lambda: bare(full), "run+check": check_after_run}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", type=Path, nargs="*", default=DEFAULT_BUNDLES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    for bundle in args.bundles:
        require_bundle(bundle, "export it first (benchmarks/weight_dominated.py --stage export exports the defaults)")
    print(f"batch 1, {args.threads} thread(s), median of {args.rounds} interleaved rounds of {args.calls} calls; "
          f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    print(f"{'bundle':28s} {'keyed us':>9s} {'bound us':>9s} {'C run us':>9s} {'bare us':>8s} {'check us':>9s} "
          f"{'keyed/bare':>10s} {'bound/bare':>10s} {'C/bare':>7s} {'load':>5s}")
    for bundle in args.bundles:
        fns = ways(bundle, args.threads)
        samples = interleaved(fns, rounds=args.rounds, reps=args.calls, warmup=args.calls // 3, rotate=True)
        us = {label: s.wall_median * 1e6 for label, s in samples.items()}
        bare = us["bare"]
        print(f"{bundle.name:28s} {us['keyed']:>9.2f} {us['bound']:>9.2f} {us['C run']:>9.2f} {bare:>8.2f} "
              f"{us['run+check'] - bare:>9.2f} {us['keyed'] / bare - 1:>+10.1%} {us['bound'] / bare - 1:>+10.1%} "
              f"{us['C run'] / bare - 1:>+7.1%} {os.getloadavg()[0]:>5.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
