"""gfedge generate BUNDLE --prompt TEXT: a TriX LM bundle writes on, torch-free, streaming."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from geofractal_edge.cli.render import print_json


def generate(
    bundle: Path = typer.Argument(..., help="A TriX LM bundle directory."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="Text to continue (any length; the model sees its last context window)."),
    max_new: int = typer.Option(200, "--max-new", "-n", help="Characters to write."),
    temperature: float = typer.Option(0.8, "--temperature", "-T", help="Sampling temperature; 0 is greedy."),
    top_k: int = typer.Option(0, "--top-k", help="Sample among the k likeliest characters (0: all)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same text."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document at the end instead of streaming."),
) -> None:
    """Continue a prompt, one character at a time, as it is written."""
    from geofractal_edge.runtimes import load
    from geofractal_edge.runtimes.text import generate as write

    runner = load(bundle)
    stream = write(runner, prompt, max_new=max_new, temperature=temperature, top_k=top_k, seed=seed)
    if as_json:
        print_json({"bundle": str(bundle), "prompt": prompt, "text": "".join(stream), "temperature": temperature, "top_k": top_k, "seed": seed})
        return
    sys.stdout.write(prompt)
    for char in stream:
        sys.stdout.write(char)
        sys.stdout.flush()
    sys.stdout.write("\n")
