"""The zoo judged on what the device really holds: a harder trace, quality-weighted hits.

On the plain trace (benchmarks/zoo_trace.py) every policy keeps its working set and scores the
same hit rate, so hit rate alone cannot tell SAGE from LRU: LRU "hits" by reusing whatever model is
resident, even a weak generalist. This trace is harder and the table weighs each hit by the quality
of the answer it gave.

Zoo: the same 7 Atlas bundles as zoo_trace.py (built and cached the same way): specialist libraries
`a` (texts 0-1, fp32/fp16/int8/int4) and `b` (texts 2-3, fp32/int8) of ~1M parameters, and a small
generalist `gen` over texts 0-5 (the only model for texts 4-5). Each bundle's resident cost is
measured first in an unbounded zoo (process RSS delta after load, warm-up and trace-shaped runs);
the budget is `--budget-models` (default 2) x the median measured cost of the specialists, so two
specialists fit and a third does not.

Trace: phases of 25-70 requests whose working set shifts between texts (one library, both
libraries, or the generalist-only texts), and bursts of 3-10 requests to a text outside the phase's
working set (a context switch that comes and goes). Each answer's char accuracy is fed back.

Reported side by side, one replay per policy over the same trace:
  quality     mean char accuracy, and its share of always-best's;
  q-hit rate  quality-weighted hit rate = sum(hit_i * quality_i) / sum(always-best quality_i):
              a hit counts only as much as the answer it served was worth;
  hit rate, swaps per selection, p50/p99 latency, peak sampled resident memory against the budget,
  and the most the process held above what the zoo accounted for its resident models (after a load
  or unload): memory no model is charged for, such as onnxruntime's shared arena.
Acceptance: SAGE's quality >= 95% of always-best, SAGE's q-hit rate > LRU's, and every policy's
peak memory <= budget + 10%.

`--wide`: the same trace over a weight-dominated zoo (benchmarks/zoo_wide.py): libraries `a` and
`b` with ~64 MiB of fp32 weights (a: fp32/fp16/int8/int4, b: fp32/fp16/int8) and the small `gen`,
cached under .bench/zoo_wide/ (training and export run once, a few minutes; later runs reuse them).
The calibration table then shows each bundle's weight bytes next to its measured resident cost.

    python benchmarks/zoo_trace_hard.py [--wide] [--work DIR] [--requests 1200] [--seed 0] [--budget-models 2] [--build-only]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import MIB  # noqa: E402
from zoo_trace import POLICIES, TEXT_CHARS, WINDOW, build_zoo, calibrate, pick_working, plot, replay, texts_used  # noqa: E402
from zoo_wide import WIDE_LIBRARIES, train_wide  # noqa: E402

WIDE_WORK = Path(__file__).resolve().parent.parent / ".bench" / "zoo_wide"


def make_hard_trace(n: int, seed: int) -> list[tuple[str, int]]:
    """Shifting phases (25-70 requests) with bursts (3-10 requests) to a text outside the phase."""
    names = list(texts_used())[:6]  # the texts some model in the zoo was trained on
    groups = {"a": names[0:2], "b": names[2:4], "gen-only": names[4:6]}
    rng = random.Random(seed)
    trace: list[tuple[str, int]] = []
    while len(trace) < n:
        working = pick_working(rng, groups, weights=[3, 3, 3, 1])
        outside = [t for t in names if t not in working]
        remaining = rng.randint(25, 70)
        while remaining > 0:
            if rng.random() < 0.05:  # a burst: another context comes and goes
                burst = rng.choice(outside)
                for _ in range(rng.randint(3, 10)):
                    trace.append((burst, rng.randrange(0, TEXT_CHARS - WINDOW)))
            trace.append((rng.choice(working), rng.randrange(0, TEXT_CHARS - WINDOW)))
            remaining -= 1
    return trace[:n]


def score(rows: list[dict]) -> None:
    """Quality relative to always-best and the quality-weighted hit rate, request by request."""
    best = next(r for r in rows if r["policy"] == "always-best")["quality_per_request"]
    for r in rows:
        q = r["quality_per_request"]
        r["quality_vs_best"] = float(q.sum() / best.sum())
        r["q_hit_rate"] = float((q * r["hit_per_request"]).sum() / best.sum())


def print_table(rows: list[dict], budget: int) -> None:
    print(f"{'policy':<12} {'quality':>8} {'vs best':>8} {'q-hit rate':>11} {'hit rate':>9} {'swaps/sel':>10} {'p50 ms':>7} {'p99 ms':>8} {'peak MiB':>9} {'peak/budget':>12} {'unaccounted':>12}")
    for r in rows:
        print(f"{r['policy']:<12} {100 * r['quality']:>7.2f}% {100 * r['quality_vs_best']:>7.1f}% {100 * r['q_hit_rate']:>10.1f}% {100 * r['hit_rate']:>8.1f}% "
              f"{r['swaps_per_selection']:>10.3f} {r['p50_ms']:>7.2f} {r['p99_ms']:>8.2f} {r['peak_bytes'] / MIB:>9.2f} {r['peak_bytes'] / budget:>11.1%} {r['unaccounted_bytes'] / MIB:>8.1f} MiB")
    for r in rows:
        print(f"  {r['policy']}: served by " + ", ".join(f"{m} {n}" for m, n in sorted(r["chosen"].items(), key=lambda kv: -kv[1])))


def verdicts(rows: list[dict], budget: int) -> bool:
    by = {r["policy"]: r for r in rows}
    sage, lru = by["sage"], by["lru"]
    checks = [
        (f"sage quality {100 * sage['quality_vs_best']:.1f}% of always-best >= 95%", sage["quality_vs_best"] >= 0.95),
        (f"sage q-hit rate {100 * sage['q_hit_rate']:.1f}% > lru's {100 * lru['q_hit_rate']:.1f}%", sage["q_hit_rate"] > lru["q_hit_rate"]),
    ]
    for r in rows:
        checks.append((f"{r['policy']}: peak sampled memory {r['peak_bytes'] / MIB:.2f} MiB <= 110% of budget {budget / MIB:.2f} MiB", r["peak_bytes"] <= 1.1 * budget))
    for text, passed in checks:
        print(f"{'PASSED' if passed else 'FAILED'} {text}")
    return all(passed for _, passed in checks)


def _parse() -> argparse.Namespace:
    cache = Path(os.environ.get("GFEDGE_CACHE") or Path.home() / ".cache" / "geofractal_edge")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wide", action="store_true", help="the weight-dominated zoo of zoo_wide.py (~64 MiB fp32 specialists)")
    parser.add_argument("--work", type=Path, default=None, help=f"where the zoo is built and cached (default: {cache / 'zoo-bench'}, shared with zoo_trace.py; "
                        f"with --wide: {WIDE_WORK})")
    parser.add_argument("--build-only", action="store_true", help="train and export the zoo, then stop")
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-models", type=float, default=2.0, help="budget = this x the median measured specialist cost")
    parser.add_argument("--plot", type=Path, default=None, help="PNG path (default: WORK/zoo_hard_resident_bytes.png)")
    args = parser.parse_args()
    args.work = args.work or (WIDE_WORK if args.wide else cache / "zoo-bench")
    return args


def main() -> None:
    args = _parse()
    import torch  # host side: training and export only; the zoo itself never imports it

    torch.set_num_threads(1)
    zoo_path = build_zoo(args.work, libraries=WIDE_LIBRARIES, train=train_wide) if args.wide else build_zoo(args.work)
    print(f"zoo: {zoo_path}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    if args.build_only:
        return
    from geofractal_edge.artifacts import open_bundle

    x = open_bundle(zoo_path / "a-fp32").golden_cases()[0].inputs["x"]
    calibration = calibrate(zoo_path, x)
    print(f"{'model':<10} {'weights MiB':>12} {'measured MiB':>13} {'weights/measured':>17} {'freed MiB':>10} {'load s':>7} {'export char acc':>16}")
    for row in calibration:
        print(f"{row['id']:<10} {row['estimate_bytes'] / MIB:>12.2f} {row['measured_bytes'] / MIB:>13.2f} {row['estimate_bytes'] / max(1, row['measured_bytes']):>16.0%} "
              f"{row['freed_bytes'] / MIB:>10.2f} {row['load_seconds']:>7.3f} {100 * row['trust']['mean']:>15.2f}%")
    costs = {r["id"]: r["measured_bytes"] for r in calibration}
    specialists = [c for m, c in costs.items() if not m.startswith("gen")]
    budget = int(args.budget_models * float(np.median(specialists)))
    pairs = [(a, b) for i, a in enumerate(costs) for b in list(costs)[i + 1 :] if costs[a] + costs[b] <= budget and not a.startswith("gen") and not b.startswith("gen")]
    print(f"budget {budget / MIB:.2f} MiB = {args.budget_models:g} x the median measured specialist cost: "
          f"{len(pairs)} of {len(specialists) * (len(specialists) - 1) // 2} specialist pairs fit together")
    texts = texts_used()
    trace = make_hard_trace(args.requests, args.seed)
    switches = sum(a[0] != b[0] for a, b in zip(trace, trace[1:]))
    print(f"trace: {len(trace)} requests over {len(set(c for c, _ in trace))} texts, {switches} context switches")
    rows = []
    for policy in POLICIES:
        started = time.perf_counter()
        rows.append(replay(zoo_path, policy, budget, trace, x, texts))
        print(f"replayed {len(trace)} requests with {policy} in {time.perf_counter() - started:.1f} s (load {os.getloadavg()[0]:.2f})", flush=True)
    score(rows)
    print()
    print_table(rows, budget)
    path = args.plot or args.work / "zoo_hard_resident_bytes.png"
    plot(rows, budget, path)
    print(f"resident bytes over time: {path}")
    passed = verdicts(rows, budget)
    print("PASSED" if passed else "FAILED", "hard zoo trace acceptance")


if __name__ == "__main__":
    main()
