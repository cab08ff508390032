"""gfedge verify BUNDLE: run the golden inputs, compare with torch's stored outputs, gate on tolerances."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from geofractal_edge.cli.render import console, print_json, verdict


def verify(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Exit 0 when every parity check passes, 1 when one fails."""
    from geofractal_edge.parity import verify_bundle

    report = verify_bundle(bundle)
    if as_json:
        print_json(report.to_dict())
    else:
        _render(report)
    if not report.passed:
        raise typer.Exit(1)


def _render(report) -> None:
    table = Table("check", "value", "limit", "result", title=f"{report.family} {report.precision} for {report.target}")
    for check in report.checks:
        sign = ">=" if check.kind == "min" else "<="
        table.add_row(check.name, f"{check.value:.6g}", f"{sign} {check.limit:g}", "ok" if check.passed else "FAIL")
    console.print(table)
    console.print(f"providers used: {', '.join(report.providers_used)}" + (f"; missing here: {', '.join(report.fallbacks)}" if report.fallbacks else ""))
    task = report.metrics[report.task_metric]
    detail = f"{report.task_metric} torch {task['torch']:.2f}% runtime {task['runtime']:.2f}%, SQNR {report.metrics['sqnr_db']:.1f} dB, {len(report.cases)} cases"
    verdict(report.passed, detail)
