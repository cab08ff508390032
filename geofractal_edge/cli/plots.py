"""Pictures people would rather look at than read. matplotlib loads only when a picture is asked for."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from geofractal_edge.artifacts import atomic
from geofractal_edge.backends.lazy import require
from geofractal_edge.errors import GfedgeError

if TYPE_CHECKING:
    from geofractal_edge.backends.bench import BenchReport


def tile_usage_png(info: dict, path: Path, *, title: str) -> None:
    layers = info.get("layers") or []
    if not layers:
        raise GfedgeError("this bundle has no routed layers to plot", "--plot applies to TriX bundles")
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(layers), 1, figsize=(8, 2.2 * len(layers)), squeeze=False)
    for i, (ax, layer) in enumerate(zip(axes[:, 0], layers)):
        usage = layer["usage"]
        total = max(1, sum(usage))
        ax.bar(range(len(usage)), [u / total for u in usage], color=["#c44" if u == 0 else "#48a" for u in usage])
        ax.axhline(1 / len(usage), color="#888", lw=0.8, ls="--", label="uniform")
        ax.set_ylabel(f"layer {i}\nshare")
        ax.set_xlim(-0.5, len(usage) - 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1, 0].set_xlabel("tile (red: never chosen)")
    axes[0, 0].legend(loc="upper right")
    fig.suptitle(title)
    _save(fig, path, "png")


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display); one line naming the extra where matplotlib is missing."""
    require("matplotlib").use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, fmt: str) -> None:
    """Lay `fig` out, render it as `fmt` and write it atomically (never a half-written picture); a failed write is one line."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=110)
    plt.close(fig)
    try:
        atomic.write_bytes(Path(path), buffer.getvalue())
    except OSError as exc:
        raise GfedgeError(f"--plot {path}: the picture could not be written ({exc.strerror or exc})", "write it elsewhere") from exc


PICTURE_SUFFIXES = (".png", ".svg")


def check_picture_path(path: Path) -> Path:
    """`path` if a picture can be written there (a .png or .svg name in a writable folder that exists); else one line
    naming the fix. Checked before long work starts, so a typo costs nothing."""
    path = Path(path)
    if path.suffix.lower() not in PICTURE_SUFFIXES:
        raise GfedgeError(f"--plot {path}: the name ends in neither .png nor .svg", "name the picture e.g. bench.png")
    if not path.parent.is_dir():
        raise GfedgeError(f"--plot {path}: the folder {path.parent} does not exist", "create it first, or write the picture elsewhere")
    if path.is_dir():
        raise GfedgeError(f"--plot {path}: that is a folder", "give a file name, e.g. bench.png")
    if not os.access(path.parent, os.W_OK):
        raise GfedgeError(f"--plot {path}: the folder {path.parent} is not writable", "write the picture elsewhere")
    require("matplotlib")  # missing: one line with the install hint, before the bench runs
    return path


def bench_picture(report: BenchReport, path: Path) -> None:
    """`gfedge bench --plot`: p50 latency per batch (log scale) and resident memory, one bar per bundle, each labelled with its
    ratio to the first bundle; the machine, runs and load average in the title. Written atomically (.png or .svg by the name)."""
    plt = _pyplot()
    subjects, ratios = report.subjects, report.ratios()
    colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(subjects))]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7.0, 1.6 + 1.1 * len(subjects) * 2), 7.5))
    _latency_panel(top, subjects, ratios, colors)
    _memory_panel(bottom, subjects, ratios, colors)
    m = report.machine
    start, end = m["load_average_start"][0], m["load_average_end"][0]
    fig.suptitle(f"gfedge bench: ratios (x) to {subjects[0].label}\n{report.runs} runs per bundle and batch, round-robin; {m['cpu']}, {m['cores']} cores, "
                 f"onnxruntime {m['onnxruntime']}; load {start:.2f} -> {end:.2f}", fontsize=9)
    _save(fig, path, Path(path).suffix.lower().lstrip("."))


def _latency_panel(ax, subjects, ratios, colors) -> None:
    """Grouped bars of p50 per batch (log scale) with p99 whiskers; every bundle but the first labelled with its ratio."""
    batches = sorted({t.batch for s in subjects for t in s.batches})
    width = 0.8 / len(subjects)
    for i, (s, ratio, color) in enumerate(zip(subjects, ratios, colors)):
        xs = [batches.index(t.batch) + (i - (len(subjects) - 1) / 2) * width for t in s.batches]
        ax.bar(xs, [t.p50_us for t in s.batches], width, color=color, label=s.label)
        ax.errorbar(xs, [t.p50_us for t in s.batches], yerr=[[0] * len(s.batches), [t.p99_us - t.p50_us for t in s.batches]],
                    fmt="none", ecolor="#444", capsize=2, lw=0.8)
        for x, t in zip(xs, s.batches):  # above the whisker, where the log scale leaves room
            if i:
                ax.text(x, t.p99_us * 1.08, _times(ratio.get(f"p50@{t.batch}")), ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.margins(y=0.15)
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    ax.set_ylabel("p50 latency, us (whisker: p99)")
    ax.legend(fontsize=8, loc="upper left")


# (field, what it shows): the memory a bundle holds, from what the graph declares to what its calls touched at most
_MEMORY = (("weight_bytes", "weights\nin the graph"), ("rss_load_bytes", "RSS\nafter load"), ("rss_warm_bytes", "RSS\nafter warm-up"),
           ("anon_warm_bytes", "private\nafter warm-up"), ("model_warm_bytes", "model's own\n(loaded again)"), ("rss_peak_bytes", "RSS peak\nin calls"))


def _memory_panel(ax, subjects, ratios, colors) -> None:
    """Grouped bars of each memory column that was measured (None: not shown); every bundle but the first labelled."""
    width = 0.8 / len(subjects)
    for i, (s, ratio, color) in enumerate(zip(subjects, ratios, colors)):
        shown = [(j, getattr(s, field)) for j, (field, _) in enumerate(_MEMORY) if getattr(s, field) is not None]
        xs = [j + (i - (len(subjects) - 1) / 2) * width for j, _ in shown]
        bars = ax.bar(xs, [value / (1 << 20) for _, value in shown], width, color=color, label=s.label)
        if i:
            ax.bar_label(bars, [_times(ratio.get(_MEMORY[j][0])) for j, _ in shown], fontsize=7, padding=1)
    ax.set_xticks(range(len(_MEMORY)), [label for _, label in _MEMORY], fontsize=8)
    ax.set_ylabel("MiB (growth over the worker before the load;\nmodel's own: before the second load)")


def _times(value: float | None) -> str:
    """A ratio as a bar label ("x0.25"); none where the first bundle lacks the number."""
    return "" if value is None else f"x{value:.2f}"
