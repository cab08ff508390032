"""Torch eager vs the runtime at batch 1, same checkpoint, same inputs, same thread count, interleaved.

    .venv/bin/python benchmarks/torch_vs_runtime.py [--work .bench/weight_dominated] [--threads 1 2] [--rounds 15]
        [--set NAME=VALUE ...]

--set: a runtime setting for every runtime session, as `gfedge bench --set` (names: the target profile's
[runtime] table), e.g. --set allow_spinning=true --set stop_spinning_after_call=true.

For each fp32 host-cpu bundle that benchmarks/weight_dominated.py exported (the shipped Atlas and
collective defaults, MiniLM, and the weight-dominated Atlas and collective), in one process:

- torch: the exportable's module (the very module traced into model.onnx: the Atlas core, the
  collective's stacked lowering, MiniLM's SentenceEncoder) in `torch.inference_mode()` after
  `torch.set_num_threads(N)`; for the collective also its trained, per-stream form (RouterCollective);
- runtime: `geofractal_edge.runtimes.load(bundle, intra_op_threads=N)` and `session.run(...)`, the
  public torch-free API (inputs validated, key bound, every call);
- runtime int8: the same inputs through the checkpoint's int8 bundle, where one was exported (for reference:
  the gate compares fp32 with fp32);
- bare: `onnxruntime.InferenceSession.run` of the same model.onnx, through the runtime's own session
  (as `gfedge bench`'s "vs bare run"), the key vector already in the feeds.

Inputs are the bundle's first golden case cut to batch 1 (`placement.batch_feeds`), handed to
every variant. Each round times every variant for ~40 ms of calls, in an order that rotates per round;
the figure is the median over rounds of the per-call mean. Outputs are compared once (max |diff|).
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from pathlib import Path

import numpy as np
import torch

from _bundles import bundle_state, keyed
from geofractal_edge.backends.timing import interleaved
from weight_dominated import DEFAULTS, GATES, MODELS, ROOT, bundle_dir

# name -> (family, checkpoint in the work dir or None for the family's shipped default): every model whose fp32 bundle
# weight_dominated.py exports, the shipped ones first (the Atlas and collective defaults, MiniLM), then the wide ones
SUBJECTS = {**DEFAULTS, **{name: (family, ckpt) for name, (family, ckpt, _) in sorted(MODELS.items(), key=lambda kv: kv[1][1] is not None)}}
GATE = GATES["torch@1"]  # runtime p50 at batch 1 >= 3x faster than torch eager


def variants(work: Path, name: str, threads: int, settings: dict | None = None) -> tuple[dict, dict]:
    """{label: no-argument callable} and their first outputs, for one subject at `threads` threads."""
    from geofractal_edge.artifacts import open_bundle
    from geofractal_edge.backends.onnxruntime.placement import batch_feeds
    from geofractal_edge.models.family import family_module
    from geofractal_edge.runtimes import load

    family, ckpt = SUBJECTS[name]
    checkpoint = None if ckpt is None else work / ckpt
    exportable = family_module(family).load_exportable(checkpoint)
    module = exportable.module.eval()
    bundle = bundle_dir(work, name, "fp32")
    opened = open_bundle(bundle)
    data, key = batch_feeds(opened, 1)
    options = {**(settings or {}), "intra_op_threads": threads}  # --threads wins over --set
    session = load(bundle, **options)
    full = keyed(opened, data, key)
    args = tuple(torch.from_numpy(np.ascontiguousarray(full[t.name])) for t in exportable.spec.inputs)
    # the bare run goes through the same onnxruntime session as the runtime's call (the small-call one at batch 1 where
    # the bundle keeps one), as gfedge bench's does: a session of its own would bring another thread pool onto the
    # same cores and measure their contention instead
    bare = session.bare_runner()
    fns = {
        "torch": lambda: module(*args),
        "runtime": lambda: session.run(data, key=key),
        "bare ort": lambda: bare(full),
    }
    int8 = bundle_dir(work, name, "int8")
    state = bundle_state(int8)
    if state.startswith("stale"):
        print(f"{name}: {int8} is {state}; its int8 column stays empty (re-export it)", flush=True)
    if state == "current":  # the same inputs through the int8 bundle of the same checkpoint
        quantized = load(int8, **options)
        fns["runtime int8"] = lambda: quantized.run(data, key=key)
    if family == "collective":
        from geofractal_edge.models.collective.checkpoint import load_checkpoint
        from geofractal_edge.models.collective.family import default_checkpoint

        trained, _ = load_checkpoint(checkpoint or default_checkpoint())
        fns["torch (trained form)"] = lambda: trained(args[0])
    with torch.inference_mode():
        first = {label: fn() for label, fn in fns.items()}
    return fns, {"torch": _first(first["torch"]), "runtime": first["runtime"][opened.manifest.graph.output_names[0]], "session": session}


def _first(out) -> np.ndarray:
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out.detach().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)


def time_interleaved(fns: dict, rounds: int, target_s: float = 0.04) -> dict[str, float]:
    """Median over `rounds` of each variant's mean seconds per call; the order rotates every round."""
    with torch.inference_mode():
        reps = {label: _calls_for(fn, target_s) for label, fn in fns.items()}
        samples = interleaved(fns, rounds=rounds, reps=reps, warmup=0, rotate=True)
    return {label: t.wall_median for label, t in samples.items()}


def _calls_for(fn, target_s: float) -> int:
    """Calls of `fn` that take about `target_s` (1 to 200), from one call timed after 3 warm-up calls."""
    for _ in range(3):
        fn()
    start = time.perf_counter()
    fn()
    return max(1, min(200, int(target_s / max(time.perf_counter() - start, 1e-6))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "weight_dominated")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--only", nargs="+", choices=list(SUBJECTS), default=list(SUBJECTS))
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    from geofractal_edge.cli.bench import parse_settings

    settings = parse_settings(args.settings)
    rows = []
    print(f"torch {torch.__version__}; batch 1; median of {args.rounds} interleaved rounds; load average at start {os.getloadavg()[0]:.2f}"
          f"{'; settings ' + str(settings) if settings else ''}", flush=True)
    header = (f"{'model':20s} {'thr':>3s} {'torch ms':>9s} {'trained ms':>10s} {'runtime ms':>10s} {'bare ms':>8s} {'torch/rt':>8s} {'trained/rt':>10s} {'rt/bare':>8s} "
              f"{'max|diff|':>9s} {'rt int8 ms':>10s} {'torch/int8':>10s} {'load':>5s}")
    print(header, flush=True)
    for name in args.only:
        bundle = bundle_dir(args.work, name, "fp32")
        state = bundle_state(bundle)
        if state != "current":
            print(f"{name}: bundle {bundle} is {state}; run benchmarks/weight_dominated.py --stage export first", flush=True)
            continue
        for n in args.threads:
            torch.set_num_threads(n)
            fns, first = variants(args.work, name, n, settings)
            diff = float(np.max(np.abs(first["torch"].astype(np.float64) - first["runtime"])))
            ms = {k: v * 1e3 for k, v in time_interleaved(fns, args.rounds).items()}
            trained = ms.get("torch (trained form)")
            row = (f"{name:20s} {n:>3d} {ms['torch']:>9.3f} {trained if trained else float('nan'):>10.3f} {ms['runtime']:>10.3f} {ms['bare ort']:>8.3f} "
                   f"{ms['torch'] / ms['runtime']:>7.2f}x {(trained / ms['runtime']) if trained else float('nan'):>9.2f}x {ms['runtime'] / ms['bare ort'] - 1:>+8.1%} {diff:>9.2e} "
                   f"{ms.get('runtime int8', float('nan')):>10.3f} {ms['torch'] / ms.get('runtime int8', float('nan')):>9.2f}x {os.getloadavg()[0]:>5.2f}")
            print(row, flush=True)
            rows.append((name, n, ms))
            first["session"].close()
            del fns, first
            gc.collect()
    print("\nverdicts (torch = the exported module, eager):")
    verdicts = []
    for name, n, ms in rows:
        speed = ms["torch"] / ms["runtime"]
        verdicts.append((f"{name} at {n} thread(s): runtime {speed:.2f}x faster than torch eager (>= {GATE}x)", speed >= GATE))
        overhead = ms["runtime"] / ms["bare ort"] - 1
        verdicts.append((f"{name} at {n} thread(s): runtime over a bare InferenceSession.run {overhead:+.1%} (<= {GATES['overhead@1']:+.0%})", overhead <= GATES["overhead@1"]))
    for line, ok in verdicts:
        print(f"  {'PASS' if ok else 'FAIL'}  {line}")
    failed = sum(not ok for _, ok in verdicts)
    print(f"{'PASSED' if not failed else 'FAILED'}: {len(verdicts) - failed}/{len(verdicts)} lines hold")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
