"""onnxruntime session settings, side by side: CPU arena, memory patterns, prepacking and spinning, each flipped.

For each bundle given (one per family), the same bundle is loaded with its target's settings and
with each switch flipped (then arena, patterns and prepacking together), each in a fresh
worker process of its own (geofractal_edge.backends.bench), and timed round-robin with the others,
so machine noise hits every setting alike. Printed per setting: resident memory grown by the load
and after warm-up, glibc heap in use after warm-up, and p50 latency at the bundle's declared min
and opt batch, each as a ratio to the target's current settings. The host-cpu `[runtime]` table was
chosen from this output (benchmarks/RESULTS.md).

Usage: python benchmarks/session_options.py BUNDLE [BUNDLE ...] [--runs N] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.backends.bench import Subject, bench

from _report import MIB, load_span, uptime

SWITCHES = {"cpu_mem_arena": "arena", "mem_pattern": "mem pattern", "prepacking": "prepack", "allow_spinning": "spin"}


def variants(profile: dict) -> dict[str, dict]:
    """label -> settings changed from the bundle's target profile: each switch flipped, then the first three together."""
    out = {"profile": {}}
    for name, label in SWITCHES.items():
        out[f"{label} {'off' if profile[name] else 'on'}"] = {name: not profile[name]}
    three = ("cpu_mem_arena", "mem_pattern", "prepacking")
    out["first three flipped"] = {name: not profile[name] for name in three}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads for every setting (default: the target's)")
    args = parser.parse_args()
    print(f"at the start: {uptime()}")
    for path in args.bundles:
        profile = dataclasses.asdict(open_bundle(path).manifest.target.runtime)
        subjects = [Subject(path, label, settings) for label, settings in variants(profile).items()]
        report = bench(subjects, runs=args.runs, threads=args.threads)
        first = report.subjects[0]
        m = report.machine
        print(f"\n{first.family} {first.precision} ({path.name}): weights {first.weight_bytes / MIB:.3f} MiB; {report.runs} runs per setting and batch, "
              f"round-robin; {m['cpu']}, {m['cores']} cores, onnxruntime {m['onnxruntime']}; "
              f"load average {load_span(m)}")
        batches = [t.batch for t in first.batches]
        head = f"{'setting':>20} {'RSS load MiB':>13} {'RSS warm MiB':>13} {'heap warm MiB':>14}" + "".join(f" {'p50 us @' + str(b):>14}" for b in batches)
        print(head + "   ratios to 'profile': RSS load, RSS warm, heap warm" + "".join(f", p50@{b}" for b in batches))
        for s, ratio in zip(report.subjects, report.ratios()):
            heap = _ratio(s.heap_warm_bytes, first.heap_warm_bytes)
            cells = [_mib(s.rss_load_bytes), _mib(s.rss_warm_bytes), _mib(s.heap_warm_bytes)] + [f"{t.p50_us:,.1f}" for t in s.batches]
            ratios = [ratio["rss_load_bytes"], ratio["rss_warm_bytes"], heap] + [ratio[f"p50@{b}"] for b in batches]
            print(f"{s.label:>20} {cells[0]:>13} {cells[1]:>13} {cells[2]:>14}" + "".join(f" {c:>14}" for c in cells[3:])
                  + "   " + "  ".join("n/a" if r is None else f"{r:.3f}" for r in ratios))


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:,.2f}"


def _ratio(value: int | None, base: int | None) -> float | None:
    return None if value is None or not base else value / base


if __name__ == "__main__":
    main()
