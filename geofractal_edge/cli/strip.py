"""gfedge strip-golden BUNDLE --keep N: a smaller bundle for a device, still verifiable."""

from __future__ import annotations

from pathlib import Path

import typer

from geofractal_edge.cli.render import console, print_json


def strip_golden(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    keep: int = typer.Option(1, "--keep", "-k", help="Golden cases to keep (the first N)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the smaller bundle here; default: replace BUNDLE (atomically)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Keep only the first N golden cases; `gfedge verify` then checks those."""
    from geofractal_edge.artifacts import open_bundle
    from geofractal_edge.artifacts.strip import strip_golden as strip

    before = open_bundle(bundle).total_bytes
    result = strip(bundle, keep=keep, out=out)
    summary = {"bundle": str(result.path), "cases": result.manifest.golden.cases, "bytes_before": before, "bytes_after": result.total_bytes}
    if as_json:
        print_json(summary)
        return
    console.print(f"wrote {result.path}: {summary['cases']} golden case(s), {before:,} -> {result.total_bytes:,} bytes")
