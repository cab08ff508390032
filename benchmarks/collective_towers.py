"""Wide lowering: CPU latency per tower for 1..32 identical towers, stacked vs one subgraph per tower.

Builds collectives of N identical pixel towers (random weights: latency does not depend on
training; width --dim, default 32 as in CollectiveConfig.tiny()), lowers each twice (`lower(stack=True)` and the naive `stack=False`), exports both with
the project's exporter and times them in onnxruntime on the CPU, batch 1, one intra-op thread,
side by side in one run. Prints graph node counts, total latency and latency per tower, and the
acceptance ratio: per-tower cost at 32 towers / per-tower cost at 1 tower (stacked), <= 0.25.

    python benchmarks/collective_towers.py [--towers 1 2 4 8 16 32] [--batch 1] [--runs 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def build(towers: int, *, stack: bool, dim: int = 32, precision: str = "fp32"):
    import torch

    from geofractal_edge.models.collective import CollectiveConfig, RouterCollective
    from geofractal_edge.models.collective.family import exportable_from_collective

    torch.manual_seed(0)
    collective = RouterCollective(CollectiveConfig.towers(towers, feature_dim=dim)).eval()
    exportable = exportable_from_collective(collective, name=f"towers{towers}", source={})
    if not stack:
        from geofractal_edge.models.collective.lowering import lower

        exportable.module = lower(collective, stack=False)
    from geofractal_edge.export.quantize import QuantContext, default_config, quantize
    from geofractal_edge.export.trace import trace

    graph = trace(exportable)
    if precision == "fp32":
        return graph
    return quantize(graph, default_config(precision), QuantContext(spec=exportable.spec, calibration=exportable.calibration()))


def latency_ms(model, *, batch: int, runs: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {"features": np.random.default_rng(0).uniform(0, 16, (batch, 64)).astype(np.float32)}
    for _ in range(20):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--towers", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--dim", type=int, default=32, help="tower width D (slots 8, FFN 4D); at D=64 batch 1 is weight-bandwidth bound")
    parser.add_argument("--precision", default="fp32", help="fp32 (default), fp16, int8 or int4: the graph as that bundle would hold it")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = []
    for towers in args.towers:
        stacked, naive = build(towers, stack=True, dim=args.dim, precision=args.precision), build(towers, stack=False, dim=args.dim, precision=args.precision)
        rows.append((towers, len(stacked.graph.node), len(naive.graph.node), latency_ms(stacked, batch=args.batch, runs=args.runs), latency_ms(naive, batch=args.batch, runs=args.runs)))
        print(f"  measured {towers} towers", file=sys.stderr, flush=True)
    print(f"CPU latency, onnxruntime CPUExecutionProvider, 1 thread, batch {args.batch}, median of {args.runs} runs; towers: pixel view, D={args.dim}, 8 slots, FFN {4 * args.dim}, {args.precision}")
    print(f"{'towers':>6} | {'nodes stacked':>13} | {'nodes per-tower':>15} | {'stacked ms':>10} | {'per tower us':>12} | {'per-tower ms':>12} | {'per tower us':>12}")
    print("-" * 99)
    for towers, n_stacked, n_naive, ms_stacked, ms_naive in rows:
        print(f"{towers:>6} | {n_stacked:>13} | {n_naive:>15} | {ms_stacked:>10.3f} | {1000 * ms_stacked / towers:>12.1f} | {ms_naive:>12.3f} | {1000 * ms_naive / towers:>12.1f}")
    first, last = rows[0], rows[-1]
    ratio = (last[3] / last[0]) / (first[3] / first[0])
    print(f"stacked per-tower cost at {last[0]} towers / at {first[0]} tower: {ratio:.3f} (acceptance: <= 0.25) -> {'PASSED' if ratio <= 0.25 else 'FAILED'}")
    return 0 if ratio <= 0.25 else 1


if __name__ == "__main__":
    raise SystemExit(main())
