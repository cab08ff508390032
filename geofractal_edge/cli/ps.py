"""gfedge ps: what a running `gfedge serve` holds: resident models, bytes, hits, swaps, trust."""

from __future__ import annotations

from pathlib import Path

import typer

from geofractal_edge.cli.render import console, print_json

MIB = 1 << 20


def ps(
    port: int = typer.Option(8470, "--port", help="Port of the gfedge serve."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address of the gfedge serve."),
    token_file: Path | None = typer.Option(None, "--token-file", help="File holding the server's bearer token, if it has one."),
    show_all: bool = typer.Option(False, "--all", "-a", help="List every model, not only resident, loading and quarantined ones."),
    as_json: bool = typer.Option(False, "--json", help="Print the full status as JSON."),
) -> None:
    """Show the models a running zoo holds, its memory against the budget, and its hit and swap counts.

    MiB is the measured resident cost (process delta at load plus growth), est. MiB the manifest's
    estimate (model file bytes); swaps counts loads, evicted the times the zoo unloaded it.
    """
    from rich.table import Table

    from geofractal_edge.runtimes.zoo.client import call
    from geofractal_edge.runtimes.zoo.serving.options import read_token

    token = None if token_file is None else read_token(token_file)
    status = call("/v2/gfedge/status", host=host, port=port, token=token)
    if as_json:
        print_json(status)
        return
    table = Table(box=None)
    for column in ("model", "state", "MiB", "est. MiB", "pins", "hits", "swaps", "evicted", "trust", "reason"):
        left = column in ("model", "state", "reason")
        table.add_column(column, justify="left" if left else "right", no_wrap=column != "reason")
    for m in status["models"]:
        if not show_all and m["state"] == "registered":
            continue
        table.add_row(m["id"], m["state"], _mib(m["measured_bytes"]), _mib(m["estimate_bytes"]), str(m["pins"]), str(m["hits"]),
                      str(m["loads"]), str(m["evictions"]), f"{m['trust']['mean']:.3f}", m["reason"])
    console.print(table)
    metrics = status["metrics"]
    rate = "-" if metrics["hit_rate"] is None else f"{100 * metrics['hit_rate']:.1f}%"
    swaps = "-" if metrics["swaps_per_selection"] is None else f"{metrics['swaps_per_selection']:.3f}"
    console.print(
        f"memory: {_mib(status['accounted_bytes'])} MiB accounted, {_mib(status['measured_bytes'])} MiB measured above baseline, "
        f"budget {_mib(status['budget_bytes'])} MiB ({status['policy']}{', low power' if status['low_power'] else ''})"
    )
    console.print(f"requests: {metrics['selections']} selections, hit rate {rate}, swaps/selection {swaps}, {metrics['failures']} failures")


def _mib(value) -> str:
    return "-" if value is None else f"{value / MIB:.2f}"
