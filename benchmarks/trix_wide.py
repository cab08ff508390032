"""A weight-dominated TriX LM: hierarchical vs flat routing vs dense quality; memory and latency per precision.

    python benchmarks/trix_wide.py [--steps 150] [--batch 4] [--skip-train] [--skip-export] [--runs 30]
        [--lowering dispatch_by_route|gather_by_route|group_by_route] [--max-batch 0] [--compare-gather]

The model: d_model 256, 2 layers, 64 ternary tiles of d_hidden 256 per layer (16.8M tile weights,
67 MB at float32). Part 1 (benchmarks/trix_wide_train.py) trains hierarchical TriX, flat TriX and
dense on the pydoc corpus with one budget and seed, and reports held-out bits/char and how often
hierarchical routes agree with the flat argmax over the same weights. Part 2 exports the
hierarchical model for host-cpu at fp32, int8 and int4 (dispatch-by-route, host-cpu's choice for 64
tiles > the profile's compute_all_max_tiles; int8/int4 run the lookup-table 2-bit kernel), plus
"float32": the same fp32 export with the tiles left as float32 initializers (the spec's ternary list
emptied; there is no CLI option for it), and prints every parity gate. --max-batch caps the bundles'
batch range (export runs the graph at the declared max: gather-by-route at 256 windows needs 4.3 GB
per gather, so cap it at 16 for that lowering). --compare-gather also exports fp32 with
gather_by_route (capped at 16 windows) and benches it against this run's fp32. Part 3 runs `backends.bench` (what `gfedge bench` runs: each bundle in a fresh
process, timed runs round-robin) at 1 and 2 threads, batch 1 and the family's typical batch (the
spec's opt, 16 windows), and prints the acceptance table, then memory after a batch-1-only warm-up. Memory lines
gate the model's own resident memory (gfedge bench's second load in its worker): the 2-bit tiles against "float32",
int8 / int4 against the fp32 bundle (whose tiles are already 2-bit); int8 / int4 against "float32" and the process's
first session's ratios are printed beside them as information. Part 4 times torch eager against the
runtime's Session on the same checkpoint, interleaved in one process, at 64 and 256 tokens.
Work directory (checkpoints, bundles, JSON): .bench/trix_wide/ (gitignored). --skip-train reuses
the checkpoints; bundles are re-exported (30-45 s each) unless --skip-export.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bundles import bundle_state, gate_text  # noqa: E402
from _report import MIB, load_span, uptime  # noqa: E402
from geofractal_edge.backends.timing import interleaved  # noqa: E402
from trix_wide_train import VARIANTS, checkpoint_path, train_all  # noqa: E402
from weight_dominated import GATES  # noqa: E402  (the acceptance limits, one copy)

WORK = Path(__file__).resolve().parents[1] / ".bench" / "trix_wide"
PRECISIONS = ("float32", "fp32", "int8", "int4")  # float32: float tiles; the others as `gfedge export` writes them
TYPICAL = 16  # the TriX spec's opt batch (windows of 64 characters)


def export_all(work: Path, *, lowering: str, precisions=PRECISIONS, max_batch: int | None = None, folder: str = "bundles") -> dict[str, Path]:
    """Bundles of the hierarchical checkpoint for host-cpu; prints each bundle's parity gates and quantization scheme."""
    from geofractal_edge.export.trace import traced as trace_of
    from geofractal_edge.pipeline import export_bundle

    bundles, traced = {}, None
    for precision in precisions:
        out = work / folder / precision
        start = time.perf_counter()
        exportable = hier_exportable(work, lowering=lowering, float_tiles=precision == "float32", max_batch=max_batch)
        traced = traced or trace_of(exportable)  # one module: float tiles change only the spec's ternary list
        result = export_bundle(family="trix", target="host-cpu", out=out, precision="fp32" if precision == "float32" else precision,
                               exportable=exportable, overwrite=True, traced=traced)
        bundles[precision] = out
        print(f"{precision}: exported in {time.perf_counter() - start:.0f} s, {describe(result.manifest)}; parity {'PASSED' if result.parity.passed else 'FAILED'}")
        for check in result.parity.checks:
            print(gate_text(check, "    {name:<40} {value:>12.6g} {sign} {limit:<10.6g} {verdict}", ("PASS", "FAIL")))
    return bundles


def hier_exportable(work: Path, *, lowering: str, float_tiles: bool, max_batch: int | None):
    """The hierarchical checkpoint as the TriX family exports it, under `lowering` (family.choose_lowering picks
    dispatch_by_route for 64 tiles on host-cpu); `float_tiles`: the spec's ternary list emptied, so the tiles stay
    float32 initializers; `max_batch`: the declared batch range capped (export checks the graph at its max)."""
    from geofractal_edge.artifacts.hashing import file_sha256
    from geofractal_edge.models.trix import family
    from geofractal_edge.models.trix.checkpoint import load_with_text

    ckpt = checkpoint_path(work, "hier")
    lm, record = load_with_text(ckpt)
    exportable = family.exportable_from_model(lm, name="trix-wide-hier", source={"checkpoint": ckpt.name, "sha256": file_sha256(ckpt)},
                                              lowering=lowering, held=record.held_out)
    spec = exportable.spec
    if float_tiles:
        spec = dataclasses.replace(spec, ternary=())
    if max_batch is not None:
        spec = dataclasses.replace(spec, dim_ranges={**spec.dim_ranges, "batch": dataclasses.replace(spec.dim_ranges["batch"], max=max_batch)})
    return dataclasses.replace(exportable, spec=spec)


def describe(manifest) -> str:
    """The lowering and quantization scheme a bundle was written with (what `gfedge inspect` shows)."""
    quant = {k: v for k, v in dict(manifest.quantization).items() if k != "precision"}
    lut = "" if manifest.lut_choice is None else f"; lookup-table kernel {'kept' if manifest.lut_choice.kept else 'not kept'}: {manifest.lut_choice.why}"
    return f"lowering {dict(manifest.family_info).get('lowering')}, quantization {json.dumps(quant, sort_keys=True)}{lut}"


def bench_all(bundles: dict[str, Path], *, threads: int, runs: int) -> dict:
    """One backends.bench run over every bundle (first: float32) at batch 1 and TYPICAL."""
    from geofractal_edge.backends.bench import bench

    report = bench([bundles[p] for p in PRECISIONS], batches=(1, TYPICAL), threads=threads, runs=runs)
    return report.to_dict()


def memory_at_batch_one(bundles: dict[str, Path], *, runs: int) -> dict:
    """Resident memory after a warm-up at batch 1 only (1 thread): the weights' share without the typical batch's activations."""
    from geofractal_edge.backends.bench import bench

    report = bench([bundles[p] for p in PRECISIONS], batches=(1,), threads=1, runs=runs).to_dict()
    by = dict(zip(PRECISIONS, report["subjects"]))
    m = report["machine"]
    print(f"\nresident memory after warm-up at batch 1 only, 1 thread (model: a second load, the model's own; first: the process's first "
          f"session); load average {load_span(m)}")
    for p in PRECISIONS:
        model, first = by[p]["model_warm_bytes"], by[p]["rss_warm_bytes"]
        print(f"  {p:>8}: model {model / MIB:7.2f} MiB, x{model / by['float32']['model_warm_bytes']:.3f} of float32 tiles, "
              f"x{model / by['fp32']['model_warm_bytes']:.3f} of the fp32 bundle; first session {first / MIB:7.2f} MiB, x{first / by['float32']['rss_warm_bytes']:.3f} of float32 tiles")
    print_rows(memory_rows(by, "batch 1"))
    return report


def memory_rows(by: dict, where: str) -> list[tuple[str, float, str, float]]:
    """The memory lines, each the model's own resident memory after warm-up (gfedge bench's second load): the 2-bit tiles
    against the same model with float32 tiles (<= 0.25), int8 / int4 against the fp32 bundle (<= 0.50 / 0.35; its tiles are
    2-bit already, so these two fail by construction: int8/int4 shrink only the other weights). As information: int8 / int4
    against the float32-tile model, and the process's first session's ratios (onnxruntime's code pages counted in)."""
    float32, fp32 = by["float32"], by["fp32"]
    rows = [(f"2-bit tiles (fp32 bundle) / float32 tiles, model memory, {where}", fp32["model_warm_bytes"] / float32["model_warm_bytes"], "<=", GATES["tiles_rss"])]
    for q, limit in GATES["rss"].items():
        rows.append((f"{q} / fp32 bundle (2-bit tiles), model memory, {where}", by[q]["model_warm_bytes"] / fp32["model_warm_bytes"], "<=", limit))
    rows.append((f"2-bit tiles / float32 tiles, first session, {where}", fp32["rss_warm_bytes"] / float32["rss_warm_bytes"], "info", 0.0))
    for q in GATES["rss"]:
        rows.append((f"{q} / float32 tiles, model memory, {where}", by[q]["model_warm_bytes"] / float32["model_warm_bytes"], "info", 0.0))
        rows.append((f"{q} / float32 tiles, first session, {where}", by[q]["rss_warm_bytes"] / float32["rss_warm_bytes"], "info", 0.0))
    return rows


def print_rows(rows: list[tuple[str, float, str, float]]) -> None:
    """One line per row: the line, its ratio, and its limit and verdict unless it is information."""
    for line, value, op, limit in rows:
        gate = "" if op == "info" else f"{op} {limit:.2f} {'PASS' if value <= limit else 'FAIL'}"
        print(f"  {line:<72} {value:>7.3f} {gate}")


def acceptance(report: dict, threads: int) -> list[tuple[str, float | None, str, float]]:
    """(line, measured ratio, comparison, limit) per acceptance line."""
    by = {s["precision"] if s["path"].rstrip("/").split("/")[-1] != "float32" else "float32": s for s in report["subjects"]}
    fp32, float32 = by["fp32"], by["float32"]

    def p50(s, b):
        return next(t["p50_us"] for t in s["batches"] if t["batch"] == b)

    rows = []
    for q in GATES["rss"]:
        rows.append((f"{q} p50 / fp32 p50, batch 1, {threads} thr", p50(by[q], 1) / p50(fp32, 1), "<=", GATES["p50@1"]))
        rows.append((f"{q} p50 / fp32 p50, batch {TYPICAL}, {threads} thr", p50(by[q], TYPICAL) / p50(fp32, TYPICAL), "<=", GATES["p50@typical"]))
    rows += memory_rows(by, f"{threads} thr")
    for q in ("fp32", "int8", "int4"):
        rows.append((f"{q} weight bytes / float32 graph", by[q]["weight_bytes"] / float32["weight_bytes"], "info", 0.0))
    for q in ("int8", "int4"):
        rows.append((f"{q} weight bytes / fp32 bundle", by[q]["weight_bytes"] / fp32["weight_bytes"], "info", 0.0))
    return rows


def print_bench(report: dict, threads: int) -> list:
    m = report["machine"]
    print(f"\nbackends.bench, {threads} thread(s), {report['runs']} runs per bundle and batch, round-robin; load average "
          f"{m['load_average_start'][0]:.2f} -> {m['load_average_end'][0]:.2f}")
    print(f"{'bundle':>8} {'batch':>5} {'p50 us':>10} {'p99 us':>10} {'RSS load MiB':>12} {'RSS warm MiB':>12} {'model warm MiB':>14} {'heap warm MiB':>13} "
          f"{'weights MiB':>11}")
    for s in report["subjects"]:
        for t in s["batches"]:
            print(f"{Path(s['path']).name:>8} {t['batch']:>5} {t['p50_us']:>10.1f} {t['p99_us']:>10.1f} {s['rss_load_bytes'] / MIB:>12.2f} "
                  f"{s['rss_warm_bytes'] / MIB:>12.2f} {s['model_warm_bytes'] / MIB:>14.2f} {(s['heap_warm_bytes'] or 0) / MIB:>13.2f} {s['weight_bytes'] / MIB:>11.3f}")
    rows = acceptance(report, threads)
    print_rows(rows)
    return rows


def torch_vs_runtime(work: Path, bundle: Path, *, threads: int, rounds: int = 15, reps: int = 5) -> list[dict]:
    """p50 of torch eager (the checkpoint, eval mode: hard routing) and the runtime's Session (the bundle), interleaved."""
    import numpy as np
    import torch

    from geofractal_edge.models.trix.checkpoint import load_checkpoint
    from geofractal_edge.runtimes import load

    torch.set_num_threads(threads)
    model = load_checkpoint(checkpoint_path(work, "hier"))
    rows = []
    with load(bundle, intra_op_threads=threads) as session:
        for batch in (1, 4):
            tokens = np.random.default_rng(batch).integers(0, model.config.vocab_size, (batch, model.config.context), dtype=np.int64)
            tt = torch.from_numpy(tokens)
            fns = {"torch": lambda: model(tt), "runtime": lambda: session.run({"tokens": tokens})}
            with torch.inference_mode():
                times = {name: t.wall_median for name, t in interleaved(fns, rounds=rounds, reps=reps, warmup=3).items()}
            rows.append({"tokens": tokens.size, "threads": threads, **{f"{k}_p50_us": v * 1e6 for k, v in times.items()},
                         "speedup": times["torch"] / times["runtime"]})
    return rows


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps for every variant (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=4, help="training batch in windows of 64 characters (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per bundle and batch (default: %(default)s)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to measure (default: 1 2)")
    parser.add_argument("--skip-train", action="store_true", help="reuse the cached checkpoints")
    parser.add_argument("--skip-export", action="store_true", help="reuse the cached bundles too")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--lowering", default="dispatch_by_route",
                        help="TriX lowering of the exported bundles (default: %(default)s, host-cpu's choice for 64 tiles; "
                             "or gather_by_route, group_by_route)")
    parser.add_argument("--max-batch", type=int, default=0,
                        help="cap the bundles' batch range (default: %(default)s, the spec's 256). Export runs the graph at the max: "
                             "gather_by_route at 256 windows materialises 4.3 GB per gather and was OOM-killed at 12 GB (use 16)")
    parser.add_argument("--compare-gather", action="store_true",
                        help="also export fp32 with gather_by_route (batch range capped at the typical batch) and bench it against this run's fp32")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; {uptime()}")
    if args.skip_train:
        missing = [n for n in VARIANTS if not checkpoint_path(args.work, n).is_file()]
        if missing:
            sys.exit(f"--skip-train: no cached checkpoint for {', '.join(missing)} in {args.work}; run once without --skip-train")
        reports = json.loads((args.work / "train.json").read_text())
    else:
        reports = train_all(args.work, steps=args.steps, batch=args.batch, seed=args.seed)
    print_training(reports)
    folder = f"bundles-{args.lowering}"
    max_batch = args.max_batch or None
    if args.skip_export:
        bundles = {p: args.work / folder / p for p in PRECISIONS}
        states = {p: bundle_state(path) for p, path in bundles.items()}
        missing = [f"{p} ({state})" for p, state in states.items() if state != "current"]
        if missing:
            sys.exit(f"--skip-export: no current {args.lowering} bundle for {', '.join(missing)} in {args.work / folder}; run once without --skip-export")
    else:
        bundles = export_all(args.work, lowering=args.lowering, max_batch=max_batch, folder=folder)
    results = {"training": reports, "bench": {}, "torch_vs_runtime": []}
    if args.compare_gather:
        results["gather"] = compare_gather(args.work, bundles["fp32"], args.lowering, runs=max(5, args.runs // 6))
    for threads in args.threads:
        report = bench_all(bundles, threads=threads, runs=args.runs)
        results["bench"][threads] = report
        print_bench(report, threads)
    results["memory_batch1"] = memory_at_batch_one(bundles, runs=10)
    print("\ntorch eager (checkpoint, hard routing) vs runtime Session (fp32 bundle: 2-bit tiles), interleaved, same threads")
    gate = GATES["torch@1"]
    for threads in args.threads:
        for row in torch_vs_runtime(args.work, bundles["fp32"], threads=threads):
            results["torch_vs_runtime"].append(row)
            verdict = f" (>= {gate:.1f}: {'PASS' if row['speedup'] >= gate else 'FAIL'})" if row["tokens"] == 64 else ""
            print(f"  {row['tokens']:>4} tokens, {threads} thr: torch {row['torch_p50_us']:>9.0f} us, runtime {row['runtime_p50_us']:>9.0f} us, "
                  f"torch / runtime {row['speedup']:.2f}x{verdict}")
    (args.work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"at the end: {uptime()}")


def compare_gather(work: Path, fp32: Path, lowering: str, *, runs: int) -> dict:
    """fp32 under gather_by_route (host-cpu's choice for 64 tiles before dispatch_by_route) against `lowering`'s fp32 bundle.

    The gather bundle's batch range is capped at TYPICAL: export runs the graph at the declared max
    (256 windows = 16,384 tokens), where each gather materialises 4.3 GB and the export was OOM-killed at 12 GB.
    """
    from geofractal_edge.backends.bench import bench

    gather = export_all(work, lowering="gather_by_route", precisions=("fp32",), max_batch=TYPICAL, folder="bundles-gather")["fp32"]
    report = bench([fp32, gather], batches=(1, TYPICAL), threads=1, runs=runs).to_dict()
    print(f"\nfp32 bundles, 1 thread, {runs} runs; load average {load_span(report['machine'])}")
    for s in report["subjects"]:
        name = "gather_by_route" if Path(s["path"]).resolve() == gather.resolve() else lowering
        for t in s["batches"]:
            print(f"  {name:<17} batch {t['batch']:>3}: p50 {t['p50_us']:>11,.0f} us; RSS warm {s['rss_warm_bytes'] / MIB:8.1f} MiB")
    return report


def print_training(reports: dict) -> None:
    r = reports["hier"]
    print(f"training: {r['steps']} steps x {r['tokens_seen'] // r['steps']} tokens, seed shared; held-out {r['held_out_chars']} chars")
    print(f"{'variant':>7} {'held-out bpc':>12} {'params':>10} {'active FFN/token':>16} {'train s':>8}")
    for name, rep in reports.items():
        print(f"{name:>7} {rep['held_out_bpc']:>12.4f} {rep['total']:>10} {rep['ffn_active_per_token']:>16} {rep['train_seconds']:>8.0f}")
    agreement = r.get("agreement")
    if agreement:
        layers = " ".join(f"{a:.3f}" for a in agreement["per_layer"])
        print(f"hierarchical routes = flat argmax over the same weights, per layer: {layers} ({agreement['tokens']} held-out tokens); "
              f"the hierarchical model's weights routed flat: bpc {agreement['bpc_routed_flat']:.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
