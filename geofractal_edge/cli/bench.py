"""gfedge bench BUNDLE [BUNDLE ...]: latency, throughput, load time, memory and weights, side by side."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from geofractal_edge.cli.render import console, print_json, progress_bar
from geofractal_edge.errors import GfedgeError

MIB = 1 << 20


def bench(
    bundles: list[Path] = typer.Argument(..., help="Bundle directories; ratios are to the first."),
    batch: list[int] = typer.Option(None, "--batch", "-b", help="Leading-dimension size to time (repeat for several); default: its declared min and opt."),
    threads: int | None = typer.Option(None, "--threads", "-t", min=0, help="onnxruntime intra-op threads for every bundle (0: onnxruntime's choice); default: each target's."),
    runs: int = typer.Option(200, "--runs", "-n", min=1, help="Timed runs per bundle and batch, round-robin over the bundles."),
    setting: list[str] = typer.Option(None, "--set", "-s", metavar="NAME=VALUE",
                                      help="A runtime setting for every bundle (repeat), e.g. --set arena_shrinkage=true --set mmap_threshold_kib=256; "
                                           "names: the target profile's [runtime] table."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    plot: Path | None = typer.Option(None, "--plot", help="Also draw the comparison (latency per batch, memory; ratios to the first) to a .png or .svg."),
) -> None:
    """Measure bundles side by side, each loaded in a fresh process of its own."""
    from geofractal_edge.backends.bench import Subject, prepare, run

    overrides = parse_settings(setting or [])
    if plot is not None:
        from geofractal_edge.cli.plots import check_picture_path

        check_picture_path(plot)  # before any worker starts: a bad name costs nothing
    plans = prepare([Subject(path, settings=overrides) for path in bundles], batches=batch or None, threads=threads)  # a bad bundle or batch is one line, before any drawing
    with progress_bar(enabled=not as_json) as progress:
        report = run(plans, runs=runs, progress=progress)
    if as_json:
        print_json(report.to_dict())
    else:
        _render(report)
    if plot is not None:  # after the numbers are out: a picture that cannot be drawn loses nothing measured
        from geofractal_edge.cli.plots import bench_picture

        bench_picture(report, plot)
        if not as_json:
            console.print(f"wrote {plot}")


def parse_settings(pairs: list[str]) -> dict:
    """["arena_shrinkage=true", "intra_op_threads=2"] -> {"arena_shrinkage": True, "intra_op_threads": 2}; names are checked later."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise GfedgeError(f"--set {pair!r} is not NAME=VALUE", "write it as e.g. --set arena_shrinkage=true")
        text = value.strip().lower()
        if text in ("true", "false"):
            out[name.strip()] = text == "true"
        elif text.isascii() and text.isdigit():
            out[name.strip()] = int(text)
        else:
            raise GfedgeError(f"--set {name.strip()}={value!r}: the value is neither true, false nor a whole number", "runtime settings are switches or counts")
    return out


def _render(report) -> None:
    table = Table("bundle", "precision", "batch", "p50 us", "p99 us", "items/s", "vs bare run", "load ms", "RSS load MiB", "RSS warm MiB",
                  "RSS peak MiB", "private warm MiB", "model warm MiB", "weights MiB", "p50 x", "RSS warm x", "RSS peak x", "private warm x", "model warm x",
                  "weights x",
                  title="ratios (x) are to the first bundle; RSS warm: held between calls; RSS peak: the calls' high-water mark; "
                        "private: RssAnon, without the shared library code pages; model: RSS warm of a second load in the same process, "
                        "without what only the first session pays (the model's own cost, as the zoo counts it)")
    for s, ratio in zip(report.subjects, report.ratios()):
        for i, t in enumerate(s.batches):
            first = i == 0
            table.add_row(
                s.label if first else "", s.precision if first else "", str(t.batch), f"{t.p50_us:,.1f}", f"{t.p99_us:,.1f}", f"{t.items_per_s:,.0f}",
                f"{t.overhead:+.1%}", f"{s.load_seconds * 1e3:,.1f}" if first else "", _mib(s.rss_load_bytes) if first else "",
                _mib(s.rss_warm_bytes) if first else "", _mib(s.rss_peak_bytes) if first else "", _mib(s.anon_warm_bytes) if first else "",
                _mib(s.model_warm_bytes) if first else "", f"{s.weight_bytes / MIB:,.3f}" if first else "", _x(ratio.get(f"p50@{t.batch}")), _x(ratio["rss_warm_bytes"]) if first else "",
                _x(ratio["rss_peak_bytes"]) if first else "", _x(ratio["anon_warm_bytes"]) if first else "", _x(ratio["model_warm_bytes"]) if first else "",
                _x(ratio["weight_bytes"]) if first else "",
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
