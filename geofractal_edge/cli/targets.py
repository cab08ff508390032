"""gfedge targets list | show NAME"""

from __future__ import annotations

import typer
from rich.table import Table

from geofractal_edge.cli.render import console, print_json
from geofractal_edge.targets import all_targets, get_target

app = typer.Typer(help="Target device profiles (data, one TOML file each).", no_args_is_help=True)


@app.command("list")
def list_targets(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the known targets."""
    profiles = all_targets()
    if as_json:
        print_json([p.to_dict() for p in profiles.values()])
        return
    table = Table("target", "aliases", "SM", "memory", "TensorRT", "precisions", "default")
    for p in profiles.values():
        memory = "host" if p.memory_gib is None else f"{p.memory_gib:g} GiB" + (" shared" if p.memory_shared else "")
        table.add_row(p.name, ", ".join(p.aliases), p.sm or "-", memory, p.tensorrt_version or "-", " ".join(p.precisions), p.default_precision)
    console.print(table)


@app.command("show")
def show_target(name: str, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show every field of one target."""
    profile = get_target(name)
    if as_json:
        print_json(profile.to_dict())
        return
    table = Table("field", "value", title=profile.name)
    for field, value in profile.to_dict().items():
        table.add_row(field, ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
    console.print(table)
