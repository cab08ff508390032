"""gfedge verify BUNDLE: run the golden inputs, compare with torch's stored outputs, gate on tolerances."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from geofractal_edge.cli.render import console, print_json, verdict


def verify(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 if any part of the graph would not run on the target's first provider."),
    engine: bool = typer.Option(False, "--engine", help="Verify engine.plan with TensorRT (made by `gfedge build`) instead of onnxruntime."),
) -> None:
    """Exit 0 when every parity check passes, 1 when one fails."""
    from geofractal_edge.artifacts import open_bundle
    from geofractal_edge.parity import verify_bundle
    from geofractal_edge.backends.placement import check_placement

    if engine:
        from geofractal_edge.backends.tensorrt import TensorRTSession as Session
    else:
        from geofractal_edge.runtimes import Session
    opened = open_bundle(bundle)
    session = Session(opened)
    placement = check_placement(session, strict=strict)
    report = verify_bundle(opened, session=session)
    if as_json:
        print_json({**report.to_dict(), "placement": placement.to_dict()})
    else:
        console.print(placement.line(), soft_wrap=True)
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
    routing = report.metrics.get("route_agreement")
    if routing:
        _render_routes(routing)
    task = report.metrics[report.task_metric]
    detail = f"{report.task_metric} torch {task['torch']:.2f}% runtime {task['runtime']:.2f}%, SQNR {report.metrics['sqnr_db']:.1f} dB, {len(report.cases)} cases"
    verdict(report.passed, detail)


def _render_routes(routing: dict) -> None:
    for name, part in routing["by_output"].items():
        layers = ", ".join(f"{a:.4%}" for a in part["per_layer"])
        console.print(f"{name}: agreement per layer {layers}; {part['disagreements']} of {part['decisions']} decisions differ, "
                      f"{part['near_ties']} of them near-ties (torch margin <= {part['near_tie_rel']:g} x the layer's median)")
        for item in part["listed"][:10]:
            tie = "near-tie" if item["near_tie"] else "CLEAR MARGIN"
            console.print(f"  {item['case']} layer {item['layer']} at {item['at']}: torch {item['torch']} vs runtime {item['runtime']}, "
                          f"margin {item['torch_margin']:.4g} ({tie})")
    console.print(f"numeric checks on the {routing['rows_all_agree']} of {routing['rows']} rows where every route agrees")
