"""gfedge inspect BUNDLE: the manifest, checked."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from geofractal_edge.cli.render import console, print_json


def inspect(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole manifest as JSON."),
) -> None:
    """Check every hash, then print what the bundle holds."""
    from geofractal_edge.artifacts import open_bundle

    opened = open_bundle(bundle)
    data = opened.manifest.data
    if as_json:
        print_json(data)
        return
    console.print(f"[bold]{data['family']}[/] bundle for [bold]{data['target']['name']}[/] at {data['precision']} (format {data['format_version']}, opset {data['opset']})")
    console.print(f"model: {data['model']['name']}  core {data['model'].get('core_sha256', '')[:16]}  from {data['model']['source'].get('checkpoint')}")
    io = Table("tensor", "dtype", "shape", "range", "role", title="inputs and outputs")
    for t in opened.manifest.inputs + opened.manifest.outputs:
        io.add_row(t["name"], t["dtype"], str(t["shape"]), str(t.get("range") or ""), t.get("role", ""))
    console.print(io)
    files = Table("file", "bytes", "sha256", title="files (all hashes checked)")
    for rel, meta in data["files"].items():
        files.add_row(rel, f"{meta['bytes']:,}", meta["sha256"][:16])
    console.print(files)
    if data.get("keys"):
        console.print(f"keys ({data['keys']['dim']} floats): {', '.join(data['keys']['names'])}")
    parity = data.get("parity")
    if parity:
        console.print(f"parity at export: {'PASSED' if parity['passed'] else 'FAILED'} on {', '.join(parity['providers_used'])}")
    if data.get("tensorrt"):
        trt = data["tensorrt"]
        console.print(f"TensorRT {trt['tensorrt_version']} (SM {trt['sm']}): strongly typed, workspace {trt['workspace_bytes'] >> 20} MiB, opt level {trt['builder_optimization_level']}")
