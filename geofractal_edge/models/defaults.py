"""Pretrained defaults shipped as package data, and the command that regenerates them.

Each family's default is a checkpoint trained by the family's own code from a recipe (the config,
the seed, the data it names, the package version). The package ships it in
``geofractal_edge/models/<family>/defaults/``: ``default.safetensors`` and ``default.json``, which
records the recipe, its sha256, the seed, the command that made it and the checkpoint's sha256.

`resolve` gives a family's default checkpoint: the shipped one when its recipe hash equals the one
the current code computes (its sha256 is checked; a damaged file is a one-line error, never a silent
retrain), else the one trained earlier into the cache, else it trains it once, with a progress phase
that says why the shipped one was not used.

``python -m geofractal_edge.models.defaults`` (``make defaults``) retrains every family's default
with the same code and rewrites the shipped files; ``--from-cache`` ships a checkpoint the cache
already holds for the current recipe instead of training it again.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from geofractal_edge.artifacts.hashing import file_sha256
from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.family import FAMILIES, Progress, cache_dir

TRAINED = ("atlas", "trix", "collective")  # the families with a trained default (the encoder is MiniLM's)
NAME = "default"
COMMAND = "python -m geofractal_edge.models.defaults --family {family}"
Train = Callable[[Path, "Progress | None"], None]  # (checkpoint to write, progress callback (phase, done, total))


@dataclass(frozen=True)
class Recipe:
    """What defines a family's default: the fields are hashed; training them gives the same model."""

    family: str
    fields: dict  # version, config, seed and the data it was trained on
    seed: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.fields, sort_keys=True).encode()).hexdigest()

    @property
    def cached(self) -> Path:
        """Where a default trained on this machine is cached: $GFEDGE_CACHE/<family>-default-<hash16>.safetensors."""
        return cache_dir() / f"{self.family}-default-{self.sha256[:16]}.safetensors"


def folder(family: str) -> Path:
    """geofractal_edge/models/<family>/defaults/, inside the installed package."""
    return Path(__file__).resolve().parent / family / "defaults"


def resolve(recipe: Recipe, *, train: Train, progress: Progress | None = None) -> Path:
    """The shipped default when it matches `recipe`, else the cached one, else trained now and cached."""
    shipped, reason = shipped_default(recipe)
    if shipped is not None:
        return shipped
    path = recipe.cached
    if not path.is_file():
        phase = f"train {recipe.family} default ({reason}; once, cached in {cache_dir()})"
        train(path, None if progress is None else (lambda phase_, done, total: progress(phase, done, total)))
    return path


def shipped_default(recipe: Recipe) -> tuple[Path | None, str]:
    """(the shipped checkpoint, "") when its recorded recipe hash is `recipe`'s; else (None, why not).

    A shipped checkpoint whose sha256 differs from the recorded one raises a one-line GfedgeError.
    """
    record_path = folder(recipe.family) / f"{NAME}.json"
    if not record_path.is_file():
        return None, "no shipped default in this install"
    record = json.loads(record_path.read_text(encoding="utf-8"))
    if record.get("recipe_sha256") != recipe.sha256:
        return None, f"the shipped default is for recipe {str(record.get('recipe_sha256'))[:12]}, this code's is {recipe.sha256[:12]}"
    checkpoint = record_path.with_name(record["checkpoint"])
    found = file_sha256(checkpoint) if checkpoint.is_file() else "missing"
    if found != record.get("checkpoint_sha256"):
        raise GfedgeError(f"the shipped {recipe.family} default {checkpoint} is damaged (sha256 {found[:12]}, recorded {str(record.get('checkpoint_sha256'))[:12]})",
                          "reinstall geofractal-edge, or regenerate it with `make defaults`")
    return checkpoint, ""


def ship(family: str, checkpoint: Path, recipe: Recipe) -> Path:
    """Copy `checkpoint` into the family's defaults folder and write its record; returns the record's path."""
    import torch

    from geofractal_edge import __version__

    out = folder(family)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{NAME}.safetensors"
    shutil.copyfile(checkpoint, target)
    record = {
        "family": family,
        "checkpoint": target.name,
        "checkpoint_sha256": file_sha256(target),
        "checkpoint_bytes": target.stat().st_size,
        "recipe_sha256": recipe.sha256,
        "seed": recipe.seed,
        "command": COMMAND.format(family=family),
        "trained_with": {"geofractal_edge": __version__, "python": platform.python_version(), "torch": torch.__version__},
        "recipe": recipe.fields,
    }
    path = out / f"{NAME}.json"
    path.write_text(json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def regenerate(family: str, *, from_cache: bool = False, progress: Progress | None = None) -> Path:
    """Train `family`'s default with its own code (or take the cached one for this recipe) and ship it."""
    module = importlib.import_module(FAMILIES[family])
    recipe = module.default_recipe()
    if from_cache and recipe.cached.is_file():
        return ship(family, recipe.cached, recipe)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / f"{NAME}.safetensors"
        module.train_default(checkpoint, progress)
        return ship(family, checkpoint, recipe)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Retrain the shipped default checkpoints with the current code and recipes.")
    parser.add_argument("--family", action="append", choices=TRAINED, help="a family to regenerate; repeat; default: all")
    parser.add_argument("--from-cache", action="store_true", help="ship the checkpoint $GFEDGE_CACHE already holds for the current recipe, if any")
    args = parser.parse_args(argv)
    for family in args.family or TRAINED:
        print(f"{family}: {'shipping the cached' if args.from_cache else 'training the'} default ...", file=sys.stderr, flush=True)
        record = json.loads(regenerate(family, from_cache=args.from_cache, progress=_tenths).read_text(encoding="utf-8"))
        print(f"{family}: {record['checkpoint_bytes']:,} bytes, sha256 {record['checkpoint_sha256'][:16]}, recipe {record['recipe_sha256'][:16]}")
    return 0


def _tenths(phase: str, done: int, total: int) -> None:
    """A plain progress line at every tenth of a phase (make defaults runs for minutes, often unattended)."""
    if done == total or done % max(1, total // 10) == 0:
        print(f"  {phase}: {done}/{total}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
