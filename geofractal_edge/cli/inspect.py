"""gfedge inspect BUNDLE: the manifest, checked."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from geofractal_edge.cli.render import console, int4_setting, kept_line, print_json


def inspect(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole manifest as JSON."),
    plot: Path | None = typer.Option(None, "--plot", help="Routed models: write a PNG of tile usage per layer."),
) -> None:
    """Check every hash, then print what the bundle holds."""
    from geofractal_edge.artifacts import open_bundle

    opened = open_bundle(bundle)
    m = opened.manifest
    if as_json:
        print_json(m.to_dict())
        return
    data = m.to_dict()  # the free-form parts (model source, family_info) are read from here
    console.print(f"[bold]{data['family']}[/] bundle for [bold]{data['target']['name']}[/] at {data['precision']} (format {data['format_version']}, opset {data['opset']})")
    console.print(f"model: {data['model']['name']}  core {data['model'].get('core_sha256', '')[:16]}  from {data['model']['source'].get('checkpoint')}")
    io = Table("tensor", "dtype", "shape", "range", "role", title="inputs and outputs")
    for t in opened.manifest.inputs + opened.manifest.outputs:
        io.add_row(t.name, t.dtype, str(list(t.shape)), str(list(t.range) if t.range else ""), t.role)
    console.print(io)
    files = Table("file", "bytes", "sha256", title="files (all hashes checked)")
    for rel, meta in data["files"].items():
        files.add_row(rel, f"{meta['bytes']:,}", meta["sha256"][:16])
    console.print(files)
    if data.get("keys"):
        console.print(f"keys ({data['keys']['dim']} floats): {', '.join(data['keys']['names'])}")
    scheme = data.get("quantization") or {}
    settings = {k: v for k, v in scheme.items() if k not in ("scheme", "precision", "version")}
    console.print(f"quantization: {scheme.get('scheme', '-')} {_pairs(settings)} ({data['weight_dialect']} dialect)")
    console.print(f"runtime settings: {_pairs(data['target']['runtime'])}")
    if opened.manifest.small_calls is not None:
        console.print(kept_line("small calls", opened.manifest.small_calls))
    if opened.manifest.int4_choice is not None:
        console.print(f"int4 setting: {int4_setting(opened.manifest.int4_choice)}")
    if opened.manifest.lut_choice is not None:
        console.print(kept_line("lookup-table 2-bit kernel", opened.manifest.lut_choice))
    parity = data.get("parity")
    if parity:
        console.print(f"parity at export: {'PASSED' if parity['passed'] else 'FAILED'} on {', '.join(parity['providers_used'])}")
    info = data.get("family_info") or {}
    if info.get("layers"):
        _render_routing(info)
    if plot is not None:
        from geofractal_edge.cli.plots import tile_usage_png

        tile_usage_png(info, plot, title=f"{data['model']['name']} ({data['precision']}, {info.get('lowering', '')})")
        console.print(f"wrote {plot}")
    if data.get("tensorrt"):
        trt = data["tensorrt"]
        console.print(f"TensorRT {trt['tensorrt_version']} (SM {trt['sm']}): strongly typed, workspace {trt['workspace_bytes'] >> 20} MiB, opt level {trt['builder_optimization_level']}")


def _pairs(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def _render_routing(info: dict) -> None:
    table = Table("layer", "tiles", "unused", "busiest share", "unique signatures", "mean Hamming", "clusters",
                  title=f"routing: {info['routing']}, lowered as {info['lowering']} (usage on {info['golden_tokens']} golden tokens)")
    for i, layer in enumerate(info["layers"]):
        usage = layer["usage"]
        total = max(1, sum(usage))
        clusters = layer.get("clusters")
        table.add_row(str(i), str(layer["tiles"]), str(sum(1 for u in usage if u == 0)), f"{max(usage) / total:.1%}",
                      str(layer["unique_signatures"]), f"{layer['mean_signature_hamming']:.3f}",
                      " ".join("{" + ",".join(map(str, c)) + "}" for c in clusters) if clusters else "-")
    console.print(table)
