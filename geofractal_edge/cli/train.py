"""gfedge train FAMILY: train a model (or, for Atlas, a new key against a frozen core)."""

from __future__ import annotations

from pathlib import Path

import typer

from geofractal_edge.cli.render import console, print_json, progress_bar
from geofractal_edge.cli.train_collective import train_collective
from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.family import read_text

app = typer.Typer(help="Train a family's model on your data or the embedded default data.", no_args_is_help=True)


@app.command("atlas")
def train_atlas(
    out: Path = typer.Option(..., "--out", help="Checkpoint to write (.safetensors); with --key-only, the key file."),
    text: list[Path] = typer.Option([], "--text", help="A UTF-8 text file; repeat for a library. Default: the embedded library."),
    key_only: bool = typer.Option(False, "--key-only", help="Learn one new key against the frozen core of --model."),
    model: Path | None = typer.Option(None, "--model", help="With --key-only: the library checkpoint whose core stays frozen."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Optimizer steps (default: the config's)."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print the training report as JSON."),
) -> None:
    """Train an Atlas library (one core, one key per text), or one key with --key-only."""
    from geofractal_edge.models.atlas.cli_support import train_key_file, train_library_file

    texts = _read_texts(text)
    with progress_bar(enabled=not as_json) as progress:
        if key_only:
            if model is None or len(texts) != 1:
                raise GfedgeError("--key-only needs --model CKPT and exactly one --text FILE", "e.g. gfedge train atlas --key-only --model lib.safetensors --text new.txt --out new.key.safetensors")
            report = train_key_file(model=model, name=next(iter(texts)), text=next(iter(texts.values())), out=out, steps=steps, seed=seed, progress=progress)
        else:
            report = train_library_file(texts=texts or None, out=out, steps=steps, seed=seed, progress=progress)
    if as_json:
        print_json(report)
    else:
        for name, acc in report["accuracy"].items():
            console.print(f"  {name:<28} char accuracy {100 * acc:6.2f}%")
        console.print(f"wrote {out} ({report['seconds']:.1f} s)")


def _read_texts(paths: list[Path]) -> dict[str, str]:
    texts = {}
    for path in paths:
        content = read_text(path, what=f"text file {path}", missing_fix="check the --text path")
        if len(content) < 2:
            raise GfedgeError(f"text file {path} has fewer than 2 characters", "pass a real text")
        if path.stem in texts:
            raise GfedgeError(f"two texts are named {path.stem}", "rename one file")
        texts[path.stem] = content
    return texts


@app.command("trix")
def train_trix(
    out: Path = typer.Option(..., "--out", help="Checkpoint to write (.safetensors)."),
    text: Path | None = typer.Option(None, "--text", help="A UTF-8 text file; default: CPython's pydoc topics (real English)."),
    tiles: int | None = typer.Option(None, "--tiles", min=2, help="Tiles per TriX FFN (default: the config's)."),
    hierarchical: bool = typer.Option(False, "--hierarchical", help="2-level routing: cluster, then tile (O(sqrt n))."),
    dense: bool = typer.Option(False, "--dense", help="Train the dense-FFN baseline instead (same active parameters)."),
    steps: int | None = typer.Option(None, "--steps", min=1),
    context: int | None = typer.Option(None, "--context", min=1, help="Characters per training window (default: the config's, 64)."),
    held_out: float | None = typer.Option(None, "--held-out", help="Fraction of the text, from its end, kept for the held-out score (default: 0.1)."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print the training report as JSON."),
) -> None:
    """Train a character-level TriX LM (ternary tiles, signature routing); reports held-out bits/char.

    The text's size is checked against --context and --held-out before any training."""
    from geofractal_edge.models.trix.cli_support import train_trix_file

    content = None
    if text is not None:
        content = next(iter(_read_texts([text]).values()))
    with progress_bar(enabled=not as_json) as progress:
        report = train_trix_file(text=content, out=out, tiles=tiles, hierarchical=hierarchical, dense=dense, steps=steps, seed=seed,
                                 context=context, held_out=held_out, progress=progress)
    if as_json:
        print_json(report)
    else:
        console.print(f"held-out bits/char {report['held_out_bpc']:.4f} ({report['ffn']}, {report['steps']} steps); wrote {out}")


app.command("collective")(train_collective)
