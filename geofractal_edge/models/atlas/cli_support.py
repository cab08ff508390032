"""File-level training entry points behind `gfedge train atlas`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from geofractal_edge.artifacts import Key, write_key
from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.atlas.checkpoint import core_sha256, load_checkpoint, save_checkpoint
from geofractal_edge.models.atlas.config import AtlasConfig
from geofractal_edge.models.atlas.data import build_vocab, default_texts
from geofractal_edge.models.atlas.train import char_accuracy, train_key, train_library


def train_library_file(*, texts: dict[str, str] | None, out: Path, steps: int | None, seed: int, progress=None) -> dict:
    texts = texts or default_texts()
    config = AtlasConfig.default(build_vocab(texts.values()), max_chars=max(len(text) for text in texts.values()))
    if steps is not None:  # into the config, so the checkpoint and every bundle made from it record the real recipe
        config = dataclasses.replace(config, steps=steps)
    library, report = train_library(texts, config=config, seed=seed, progress=_bar(progress, "train atlas library"))
    save_checkpoint(out, library, texts)
    return {"accuracy": report["accuracy"], "seconds": report["seconds"], "steps": report["steps"], "out": str(out)}


def train_key_file(*, model: Path, name: str, text: str, out: Path, steps: int | None, seed: int, progress=None) -> dict:
    if not Path(model).is_file():
        raise GfedgeError(f"model checkpoint {model} does not exist", "train one with `gfedge train atlas --out CKPT`")
    library, _ = load_checkpoint(model)
    core = library.core.eval()
    unknown = sorted(set(text) - set(library.config.vocab))
    if unknown:
        raise GfedgeError(f"the text has characters the core cannot write: {''.join(unknown)[:20]!r}", "remove them, or train a new library that includes them")
    key, _ = train_key(core, text, steps=steps, seed=seed, progress=_bar(progress, f"train key {name}"))
    accuracy = char_accuracy(core, text, key, library.config.vocab)
    write_key(out, Key(name=name, vector=key.detach().cpu().numpy(), core_sha256=core_sha256(core), family="atlas", length=len(text)))
    return {"accuracy": {name: accuracy}, "seconds": 0.0, "out": str(out)}


def _bar(progress, phase: str):
    return None if progress is None else (lambda step, total, loss: progress(phase, step, total))
