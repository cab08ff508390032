"""File-level training entry point behind `gfedge train trix`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from geofractal_edge.models.trix.checkpoint import save_checkpoint
from geofractal_edge.models.trix.config import TrixConfig
from geofractal_edge.models.trix.data import build_vocab, corpus
from geofractal_edge.models.trix.train import train_lm


def train_trix_file(*, text: str | None, out: Path, tiles: int | None, hierarchical: bool, dense: bool, steps: int | None,
                    seed: int, context: int | None = None, held_out: float | None = None, progress=None) -> dict:
    """Every override goes into the config, so the checkpoint and every bundle made from it record the real recipe;
    `train_lm` checks the text's size against the context before any training. The checkpoint records the text
    (sha256, held-out head), so export measures golden cases and calibration on what the model trained on."""
    text = corpus() if text is None else text
    config = TrixConfig.default(build_vocab(text))
    overrides = {"n_tiles": tiles, "steps": steps, "context": context, "held_out_fraction": held_out}
    changes = {name: value for name, value in overrides.items() if value is not None}
    if hierarchical:
        changes["routing"] = "hierarchical"
    config = dataclasses.replace(config, **changes)
    bar = None if progress is None else (lambda step, total, loss: progress("train trix", step, total))
    model, report = train_lm(config, ffn="dense" if dense else "trix", seed=seed, progress=bar, text=text)
    save_checkpoint(out, model, report=report, text=text)  # records the text's sha256 and held-out head for export
    return {**{k: v for k, v in report.items() if k != "tile_usage"}, "out": str(out)}
