"""gfedge build BUNDLE: build the TensorRT engine on the device and check it against the golden outputs."""

from __future__ import annotations

from pathlib import Path

import typer

from geofractal_edge.cli.render import console, print_json, progress_bar, verdict


def build(
    bundle: Path = typer.Argument(..., help="Bundle exported for a TensorRT target (gfedge export --target ...)."),
    timing_cache: Path | None = typer.Option(
        None, "--timing-cache", help="Timing cache file shared by builds on this device: reused when made by this TensorRT on this GPU, then updated."
    ),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Run the golden inputs through the new engine and gate on parity."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Build engine.plan for this device from the bundle's ONNX and write it into the bundle (atomically)."""
    from geofractal_edge.errors import MissingDependencyError
    from geofractal_edge.backends.tensorrt import build_engine

    try:
        with progress_bar(enabled=not as_json) as progress:
            result = build_engine(bundle, timing_cache=timing_cache, progress=progress)
    except MissingDependencyError as exc:  # no TensorRT / cuda-python here: one line, exit 1
        typer.echo(f"error: {exc.one_line()}", err=True)
        raise typer.Exit(1) from None
    report = _verify(result.path) if verify else None
    built = result.record["built"]
    summary = {
        "bundle": str(result.path),
        "engine_key": result.key.to_dict(),
        "built": built,
        "engine": result.record["engine"],
        "dla": result.record["dla"],
        "parity": None if report is None else report.to_dict(),
    }
    if as_json:
        print_json(summary)
    else:
        console.print(f"engine {result.key.id}: TensorRT {built['tensorrt_version']} on {built['gpu']} (SM {built['sm']}), "
                      f"{built['plan_bytes']:,} bytes, {built['seconds']:.1f} s" + (", timing cache reused" if built["timing_cache_reused"] else ""))
        if result.record["dla"]:
            dla = result.record["dla"]
            console.print(f"DLA core {dla['core']}: {dla['dla_layers']}/{dla['layers']} layers on DLA, {len(dla['gpu_fallback_layers'])} on the GPU")
        if report is not None:
            verdict(report.passed, f"engine parity: SQNR {report.metrics['sqnr_db']:.1f} dB over {len(report.cases)} golden cases")
    if report is not None and not report.passed:
        raise typer.Exit(1)


def _verify(path: Path):
    from geofractal_edge.artifacts import open_bundle
    from geofractal_edge.parity import verify_bundle
    from geofractal_edge.backends.tensorrt import TensorRTSession

    bundle = open_bundle(path)
    with TensorRTSession(bundle) as session:
        return verify_bundle(bundle, session=session)
