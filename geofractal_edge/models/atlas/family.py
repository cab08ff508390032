"""Atlas as an exportable family: checkpoint or embedded default -> Exportable; training entry points."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geofractal_edge import __version__
from geofractal_edge.artifacts.hashing import file_sha256
from geofractal_edge.models.atlas.checkpoint import core_sha256, load_checkpoint, save_checkpoint
from geofractal_edge.models.atlas.config import AtlasConfig
from geofractal_edge.models.atlas.data import build_vocab, coordinates, default_texts, encode
from geofractal_edge.models.atlas.spec import atlas_spec
from geofractal_edge.models.atlas.train import train_library
from geofractal_edge.models.defaults import Recipe, resolve
from geofractal_edge.models.family import Case, Exportable, Progress

DEFAULT_SEED = 0


def default_recipe() -> Recipe:
    """What defines the embedded default library: version, config, seed and the 8 texts."""
    texts = default_texts()
    config = AtlasConfig.default(build_vocab(texts.values()))
    return Recipe("atlas", {"v": __version__, "config": config.to_dict(), "seed": DEFAULT_SEED, "texts": texts}, seed=DEFAULT_SEED)


def train_default(path: Path, progress: Progress | None = None) -> None:
    """Train the embedded default library from its recipe and write it to `path`."""
    texts = default_texts()
    config = AtlasConfig.default(build_vocab(texts.values()))
    library, _ = train_library(texts, config=config, seed=DEFAULT_SEED, progress=_steps(progress, "train atlas (default)"))
    save_checkpoint(path, library, texts)


def default_checkpoint(*, progress: Progress | None = None) -> Path:
    """The embedded default library: shipped with the package, or trained once and cached (models/defaults.py)."""
    return resolve(default_recipe(), train=train_default, progress=progress)


def load_exportable(model: Path | None, *, progress: Progress | None = None, target=None) -> Exportable:
    """The library at `model`, or the embedded default. Atlas lowers the same way for every target."""
    path = Path(model) if model is not None else default_checkpoint(progress=progress)
    library, texts = load_checkpoint(path)
    source = {"checkpoint": "embedded default" if model is None else path.name, "sha256": file_sha256(path)}
    return exportable_from_library(library, texts, name="atlas-default" if model is None else path.stem, source=source)


def exportable_from_library(library, texts: dict[str, str], *, name: str, source: dict) -> Exportable:
    """One golden case per key: the whole text's coordinates, labelled with its characters."""
    library.eval()
    config = library.config
    keys = {n: library.key(n).detach().cpu().numpy().astype(np.float32) for n in library.names}
    cases = [
        Case(
            name=n,
            inputs={"x": coordinates(len(texts[n])).numpy().astype(np.float32)},
            key=n,
            labels={"chars": encode(texts[n], config.vocab).numpy().astype(np.int64)},
        )
        for n in library.names
    ]
    return Exportable(
        family="atlas",
        name=name,
        module=library.core,
        spec=atlas_spec(key_dim=config.key_dim, vocab_size=config.vocab_size),
        config=config.to_dict(),
        cases=cases,
        keys=keys,
        core_sha256=core_sha256(library.core),
        task={"vocab": config.vocab},
        source=source,
        key_lengths={n: len(texts[n]) for n in library.names},
    )


def _steps(progress: Progress | None, phase: str):
    if progress is None:
        return None
    return lambda step, total, loss: progress(phase, step, total)
