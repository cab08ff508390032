"""TriX as an exportable family: checkpoint or embedded default -> Exportable with a chosen lowering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from geofractal_edge import __version__
from geofractal_edge.artifacts.hashing import arrays_sha256, file_sha256
from geofractal_edge.models.defaults import Recipe, resolve
from geofractal_edge.models.family import Case, Exportable, Progress
from geofractal_edge.models.trix.checkpoint import load_checkpoint, save_checkpoint
from geofractal_edge.models.trix.config import TrixConfig
from geofractal_edge.models.trix.data import build_vocab, corpus, encode, eval_windows, split
from geofractal_edge.models.trix.lm import TrixLM
from geofractal_edge.models.trix.lowering import ExportableTrixLM
from geofractal_edge.models.trix.spec import trix_spec
from geofractal_edge.models.trix.train import train_lm

DEFAULT_SEED = 0
GOLDEN_WINDOWS = 64  # held-out windows of `context` characters
WINDOWS_PER_CASE = 16


def default_recipe() -> Recipe:
    """What defines the embedded default TriX LM: version, config (its vocab from the pydoc corpus) and seed."""
    config = TrixConfig.default(build_vocab(corpus()))
    return Recipe("trix", {"v": __version__, "config": config.to_dict(), "seed": DEFAULT_SEED}, seed=DEFAULT_SEED)


def train_default(path: Path, progress: Progress | None = None) -> None:
    """Train the embedded default TriX LM on the pydoc corpus from its recipe and write it to `path`."""
    config = TrixConfig.default(build_vocab(corpus()))
    bar = None if progress is None else (lambda step, total, loss: progress("train trix (default)", step, total))
    model, report = train_lm(config, ffn="trix", seed=DEFAULT_SEED, progress=bar)
    save_checkpoint(path, model, report=report)


def default_checkpoint(*, progress: Progress | None = None) -> Path:
    """The embedded default TriX LM: shipped with the package, or trained once and cached (models/defaults.py)."""
    return resolve(default_recipe(), train=train_default, progress=progress)


def choose_lowering(n_tiles: int, target) -> str:
    """Compute every tile and select for few tiles; gather each token's tile above the target's limit."""
    limit = 8 if target is None else target.compute_all_max_tiles
    return "compute_all_select" if n_tiles <= limit else "gather_by_route"


def load_exportable(model: Path | None, *, progress: Progress | None = None, target=None) -> Exportable:
    path = Path(model) if model is not None else default_checkpoint(progress=progress)
    lm = load_checkpoint(path)
    source = {"checkpoint": "embedded default" if model is None else path.name, "sha256": file_sha256(path)}
    return exportable_from_model(lm, name="trix-default" if model is None else path.stem, source=source,
                                 lowering=choose_lowering(lm.config.n_tiles, target))


def exportable_from_model(lm: TrixLM, *, name: str, source: dict, lowering: str, text: str | None = None) -> Exportable:
    """Golden cases are held-out windows of the corpus (or `text`), labelled with the next characters."""
    config = lm.config
    lm.eval()
    _, held = split(corpus() if text is None else text, config.held_out_fraction)
    inputs, targets = eval_windows(encode(held, config.vocab), context=config.context)
    inputs, targets = inputs[:GOLDEN_WINDOWS], targets[:GOLDEN_WINDOWS]
    cases = [
        Case(name=f"held_out_{i // WINDOWS_PER_CASE}", inputs={"tokens": inputs[i : i + WINDOWS_PER_CASE].numpy()},
             labels={"chars": targets[i : i + WINDOWS_PER_CASE].numpy()})
        for i in range(0, len(inputs), WINDOWS_PER_CASE)
    ]
    module = ExportableTrixLM(lm, lowering=lowering)
    weights = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    return Exportable(
        family="trix",
        name=name,
        module=module,
        spec=trix_spec(vocab_size=config.vocab_size, context=config.context, n_layers=config.n_layers),
        config=config.to_dict(),
        cases=cases,
        core_sha256=arrays_sha256(weights),
        task={"vocab": config.vocab},
        source=source,
        info=routing_info(lm, module, inputs, lowering=lowering),
    )


@torch.no_grad()
def routing_info(lm: TrixLM, module: ExportableTrixLM, tokens: torch.Tensor, *, lowering: str) -> dict:
    """Tile usage on the golden windows, signature distances and the cluster tree, for `gfedge inspect`."""
    _, routes, _ = module(tokens)  # routes [L, B, T]
    layers = []
    for i, ffn in enumerate(lm.trix_ffns()):
        sigs = ffn.signatures().float()  # [n, d]
        n = sigs.shape[0]
        differ = (sigs[:, None, :] != sigs[None, :, :]).float().mean(-1)  # [n, n] normalised Hamming
        layer = {
            "tiles": n,
            "usage": np.bincount(routes[i].reshape(-1).numpy(), minlength=n).tolist(),
            "unique_signatures": int(torch.unique(sigs, dim=0).shape[0]),
            "mean_signature_hamming": float(differ.sum() / max(1, n * (n - 1))),
        }
        if ffn.routing == "hierarchical":
            _, _, members, pad = ffn.hierarchy_tables()
            layer["clusters"] = [[int(t) for t, p in zip(row, pads) if p == 0] for row, pads in zip(members.tolist(), pad.tolist())]
        layers.append(layer)
    return {"routing": lm.config.routing, "lowering": lowering, "golden_tokens": int(tokens.numel()), "layers": layers}
