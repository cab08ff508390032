"""gfedge bench BUNDLE [BUNDLE ...]: latency, throughput, load time, memory and weights, side by side."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from geofractal_edge.cli.render import console, print_json, progress_bar

MIB = 1 << 20


def bench(
    bundles: list[Path] = typer.Argument(..., help="Bundle directories; ratios are to the first."),
    batch: list[int] = typer.Option(None, "--batch", "-b", help="Leading-dimension size to time (repeat for several); default: its declared min and opt."),
    threads: int | None = typer.Option(None, "--threads", "-t", min=0, help="onnxruntime intra-op threads for every bundle (0: onnxruntime's choice); default: each target's."),
    runs: int = typer.Option(200, "--runs", "-n", min=1, help="Timed runs per bundle and batch, round-robin over the bundles."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Measure bundles side by side, each loaded in a fresh process of its own."""
    from geofractal_edge.backends.bench import prepare, run

    plans = prepare(bundles, batches=batch or None, threads=threads)  # a bad bundle or batch is one line, before any drawing
    with progress_bar(enabled=not as_json) as progress:
        report = run(plans, runs=runs, progress=progress)
    if as_json:
        print_json(report.to_dict())
        return
    _render(report)


def _render(report) -> None:
    table = Table("bundle", "precision", "batch", "p50 us", "p99 us", "items/s", "vs bare run", "load ms", "RSS load MiB", "RSS warm MiB",
                  "weights MiB", "p50 x", "RSS warm x", "weights x", title="ratios (x) are to the first bundle")
    for s, ratio in zip(report.subjects, report.ratios()):
        for i, t in enumerate(s.batches):
            first = i == 0
            table.add_row(
                s.label if first else "", s.precision if first else "", str(t.batch), f"{t.p50_us:,.1f}", f"{t.p99_us:,.1f}", f"{t.items_per_s:,.0f}",
                f"{t.overhead:+.1%}", f"{s.load_seconds * 1e3:,.1f}" if first else "", _mib(s.rss_load_bytes) if first else "",
                _mib(s.rss_warm_bytes) if first else "", f"{s.weight_bytes / MIB:,.3f}" if first else "", _x(ratio.get(f"p50@{t.batch}")),
                _x(ratio["rss_warm_bytes"]) if first else "", _x(ratio["weight_bytes"]) if first else "",
            )
    console.print(table)
    m = report.machine
    start, end = m["load_average_start"], m["load_average_end"]
    console.print(f"{report.runs} timed runs per bundle and batch, round-robin; {m['cpu']}, {m['cores']} cores, onnxruntime {m['onnxruntime']}; "
                  f"load average {start[0]:.2f} at the start, {end[0]:.2f} at the end", soft_wrap=True)


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:,.2f}"


def _x(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"
