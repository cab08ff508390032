"""gfedge train collective: train a router collective on digits (one process, or DDP under torchrun).

Registered in cli/train.py as ``app.command("collective")(train_collective)``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from geofractal_edge.cli.render import console, print_json, progress_bar


def train_collective(
    out: Path = typer.Option(..., "--out", help="Checkpoint to write (.safetensors)."),
    preset: str = typer.Option("digits", "--preset", help="digits (the default collective), tiny (fast, for tests) or text (pydoc topic task over the frozen MiniLM; export it with its encoder bundle)."),
    data: Path | None = typer.Option(None, "--data", help="Your own features instead of a preset: an .npz with stream_NAME arrays ([N, width] floats, one stream each, widths may differ) and labels ([N] int); a fixed 25% is held out for the score and export."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Training epochs (default: the preset's)."),
    seed: int = typer.Option(0, "--seed"),
    processes: int = typer.Option(1, "--processes", min=1, help="Processes; >1 trains under torchrun (DDP, gloo on CPU)."),
    as_json: bool = typer.Option(False, "--json", help="Print the training report as JSON."),
) -> None:
    """Train a router collective on scikit-learn's digits (or your --data arrays) and report held-out accuracy."""
    from geofractal_edge.models.collective.cli_support import train_collective_file

    with progress_bar(enabled=not as_json and processes == 1) as progress:
        report = train_collective_file(out=out, preset=preset, epochs=epochs, seed=seed, processes=processes, progress=progress, data=data)
    if as_json:
        print_json(report)
    else:
        console.print(f"  held-out accuracy {100 * report['accuracy']:6.2f}%  ({report['epochs']} epochs, {report['world_size']} process(es))")
        console.print(f"wrote {out} ({report['seconds']:.1f} s)")
