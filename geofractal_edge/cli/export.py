"""gfedge export: one bundle for one target and precision (format onnx; more formats later)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from geofractal_edge.cli.render import console, errors, int4_setting, kept_line, print_json, progress_bar, verdict
from geofractal_edge.errors import GfedgeError


def export(
    target: str = typer.Option(..., "--target", "-t", help="Target profile name or alias (gfedge targets list)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Bundle directory to create; default: ./FAMILY-TARGET-PRECISION (printed)."),
    family: str = typer.Option("atlas", "--family", "-f", help="Model family."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Checkpoint from `gfedge train`; default: the family's embedded default."),
    precision: str | None = typer.Option(None, "--precision", "-p", help="fp32, fp16, int8, int4; default: the target's (or the --quant-config's)."),
    quant_config: Path | None = typer.Option(None, "--quant-config", help='TOML file naming a quantization scheme and its settings, e.g. scheme = "Int8Config" and per_channel = false.'),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle (only once the new one is complete)."),
    golden: int | None = typer.Option(None, "--golden", help="Keep only the first N golden cases (smaller bundle; parity and `gfedge verify` use those)."),
    calibration: Path | None = typer.Option(None, "--calibration", help="TriX: a UTF-8 text for the golden cases and int8 calibration instead of the held-out text the checkpoint recorded (every character must be in the model's vocabulary)."),
    small_calls: str = typer.Option("measure", "--small-calls", help="Where the target runs small calls on fewer threads (host-cpu: batch 1 on 1 thread): measure keeps that only where this host runs them faster; on / off decide without measuring (a CPU device other than this host)."),
    int4_variants: str = typer.Option("measure", "--int4-variants", help="int4 on a host-cpu target whose family lists alternative block sizes (MiniLM, collectives): measure builds, verifies and times each on this host and keeps one only where it is clearly faster (a measurement: it can differ between runs where variants are close); family keeps the family's choice without measuring (reproducible bundles, or a CPU device other than this host)."),
    lut_gemm: str = typer.Option("measure", "--lut-gemm", help="TriX int8 / int4 bundles of many tiles on host-cpu: onnxruntime's lookup-table 2-bit kernel (int8 activations): measure times the bundle with and without it on this host and keeps it only where it is clearly faster at its worst batch against fp32; on / off decide without measuring (a CPU device other than this host). Other bundles ignore it."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    format: str = typer.Option("onnx", "--format", help="onnx: a gfedge bundle at --out. triton: a Triton model repository at --out, its bundle beside it as OUT.bundle."),
    ensemble: Path | None = typer.Option(None, "--ensemble", help="With --format triton: the encoder bundle a text collective runs behind; the repository also gets the encoder and an ensemble taking its inputs."),
    name: str | None = typer.Option(None, "--name", help="With --format triton: the model's name in the repository (with --ensemble, the ensemble's); default: FAMILY_MODEL_TARGET_PRECISION."),
) -> None:
    """Trace, quantize and write a bundle; parity against torch is measured and recorded in it."""
    from geofractal_edge.pipeline import export_bundle
    from geofractal_edge.targets import get_target
    from geofractal_edge.targets.precisions import precision_note

    profile = get_target(target)  # an unknown name fails before any work
    config = None
    if quant_config is not None:
        from geofractal_edge.export.quantize import QuantConfig

        config = QuantConfig.from_toml(quant_config)
    if out is None:
        out = default_out(family, profile, precision or (config.precision if config is not None else None))
        errors.print(f"no --out given: writing {out}")
    if format not in ("onnx", "triton"):
        raise GfedgeError(f"unknown format '{format}'", "use --format onnx or --format triton")
    encoder = _triton_options(format, ensemble, name)  # checked before any work
    bundle_out = out if format == "onnx" else out.with_name(out.name + ".bundle")
    with progress_bar(enabled=not as_json) as progress:
        result = export_bundle(family=family, target=target, out=bundle_out, precision=precision, model=model, overwrite=overwrite, progress=progress, config=config, golden=golden,
                               calibration=calibration, small_calls=small_calls, int4_variants=int4_variants, lut_gemm=lut_gemm)
    report = result.parity
    summary = {
        "bundle": str(result.path),
        "family": family,
        "target": result.manifest.target.name,
        "precision": result.manifest.precision,
        "bytes": sum(f.bytes for f in result.manifest.files.values()),
        "parity": report.to_dict(),
    }
    choice = result.manifest.int4_choice
    if choice is not None:
        summary["int4_choice"] = dataclasses.asdict(choice)
    if result.manifest.lut_choice is not None:
        summary["lut_choice"] = dataclasses.asdict(result.manifest.lut_choice)
    note = precision_note(result.manifest.precision, result.manifest.target.ort_providers)
    if note:
        summary["note"] = note
        if not as_json:
            errors.print(f"note: {note}")
    repo = None
    if format == "triton" and report.passed:  # a bundle that fails parity is not served
        from geofractal_edge.export.triton import write_served

        repo = write_served(result.path, out, name=name, encoder=encoder, overwrite=overwrite)
        summary["triton"] = {"repository": str(repo.path), "models": repo.models, "ensemble": repo.ensemble}
    if as_json:
        print_json(summary)
    else:
        task = report.metrics[report.task_metric]
        console.print(f"wrote {result.path}: {summary['target']} {summary['precision']}, {summary['bytes']:,} bytes")
        if repo is not None:
            chained = f", ensemble {repo.ensemble}" if repo.ensemble else ""
            console.print(f"wrote Triton repository {repo.path}: models {', '.join(repo.models)}{chained}")
        if choice is not None:
            console.print(f"int4: {int4_setting(choice)}")
        if result.manifest.lut_choice is not None:
            console.print(kept_line("lookup-table 2-bit kernel", result.manifest.lut_choice))
        verdict(report.passed, f"export parity: {report.task_metric} torch {task['torch']:.2f}% vs runtime {task['runtime']:.2f}%, SQNR {report.metrics['sqnr_db']:.1f} dB")
    if not report.passed:
        raise typer.Exit(1)


def default_out(family: str, profile, precision: str | None) -> Path:
    """./FAMILY-TARGET-PRECISION, with the target's canonical name and its default precision when none is given."""
    return Path(f"{family}-{profile.name}-{precision or profile.default_precision}")


def _triton_options(format: str, ensemble: Path | None, name: str | None):
    """The opened encoder bundle for --ensemble (None without), after checking that the options fit --format."""
    if format != "triton" and (ensemble is not None or name is not None):
        raise GfedgeError("--ensemble and --name are options of the Triton repository", "add --format triton, or drop them")
    from geofractal_edge.export.triton import check_name

    if name is not None:
        check_name(name)
    if ensemble is None:
        return None
    from geofractal_edge.artifacts import open_bundle

    return open_bundle(ensemble)
