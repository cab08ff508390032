"""TriX as an exportable family: checkpoint or embedded default -> Exportable with a chosen lowering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from geofractal_edge import __version__
from geofractal_edge.artifacts.hashing import arrays_sha256, file_sha256
from geofractal_edge.models.defaults import Recipe, resolve
from geofractal_edge.models.family import Case, Exportable, Progress, read_text
from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.trix.checkpoint import TEXT_WINDOWS, load_with_text, save_checkpoint
from geofractal_edge.models.trix.config import TrixConfig
from geofractal_edge.models.trix.data import build_vocab, check_in_vocab, corpus, encode, eval_windows, split
from geofractal_edge.models.trix.lm import TrixLM
from geofractal_edge.models.trix.lowering import ExportableTrixLM
from geofractal_edge.models.trix.spec import max_batch, trix_spec
from geofractal_edge.models.trix.train import train_lm

DEFAULT_SEED = 0
GOLDEN_WINDOWS = TEXT_WINDOWS  # held-out windows of `context` characters (what a checkpoint stores)
WINDOWS_PER_CASE = 16


def default_recipe() -> Recipe:
    """What defines the embedded default TriX LM: version, config (its vocab from the pydoc corpus) and seed."""
    config = TrixConfig.default(build_vocab(corpus()))
    return Recipe("trix", {"v": __version__, "config": config.to_dict(), "seed": DEFAULT_SEED}, seed=DEFAULT_SEED)


def train_default(path: Path, progress: Progress | None = None) -> None:
    """Train the embedded default TriX LM on the pydoc corpus from its recipe and write it to `path`."""
    text = corpus()
    config = TrixConfig.default(build_vocab(text))
    bar = None if progress is None else (lambda step, total, loss: progress("train trix (default)", step, total))
    model, report = train_lm(config, ffn="trix", seed=DEFAULT_SEED, progress=bar, text=text)
    save_checkpoint(path, model, report=report, text=text)


def default_checkpoint(*, progress: Progress | None = None) -> Path:
    """The embedded default TriX LM: shipped with the package, or trained once and cached (models/defaults.py)."""
    return resolve(default_recipe(), train=train_default, progress=progress)


# torch's exporter folds a Gather of a constant tensor of at most this many elements (onnxscript's constant-folding
# input limit) into new constants: dispatch_by_route's tile selects would then leave the tile tensors' names.
FOLDED_ELEMENTS = 8192


def _folded(config: TrixConfig) -> bool:
    """Would the exporter fold dispatch_by_route's tile selects (tile tensors of at most FOLDED_ELEMENTS)?"""
    return config.n_tiles * config.d_model * config.d_hidden <= FOLDED_ELEMENTS


def choose_lowering(config: TrixConfig, target) -> str:
    """Compute every tile and select for few tiles. Above the target's limit: on onnxruntime ("ort") each tile on
    its own tokens (dispatch_by_route: no float copy of any tile, so memory tracks the 2-bit weights), unless the
    tiles are so small that the exporter folds them (and then a gather copies little); elsewhere (TensorRT) gather
    each token's tile (gather_by_route, static shapes but for the batch)."""
    limit = 8 if target is None else target.compute_all_max_tiles
    if config.n_tiles <= limit:
        return "compute_all_select"
    ort = target is not None and target.weight_dialect == "ort"
    return "dispatch_by_route" if ort and not _folded(config) else "gather_by_route"


def load_exportable(model: Path | None, *, progress: Progress | None = None, target=None, calibration: Path | None = None) -> Exportable:
    """Golden cases and int8 calibration come from `calibration` (a text file) if given, else from the held-out
    text the checkpoint recorded, else (checkpoints without one) from the pydoc corpus's held-out split."""
    path = Path(model) if model is not None else default_checkpoint(progress=progress)
    lm, record = load_with_text(path)
    source = {"checkpoint": "embedded default" if model is None else path.name, "sha256": file_sha256(path)}
    held = None
    if record is not None:
        source["text_sha256"] = record.sha256
        held = record.held_out
    if calibration is not None:
        held = read_calibration(Path(calibration), lm.config)
        source["calibration"] = {"file": Path(calibration).name, "sha256": file_sha256(Path(calibration))}
    return exportable_from_model(lm, name="trix-default" if model is None else path.stem, source=source,
                                 lowering=choose_lowering(lm.config, target), held=held)


def read_calibration(path: Path, config: TrixConfig) -> str:
    """The text of a --calibration file, refused in one line unless it encodes and holds one context window."""
    what = f"calibration text {path.name}"
    text = read_text(path, what=what, missing_fix="pass a UTF-8 text file to --calibration")
    check_in_vocab(text, config.vocab, what=what)
    if len(text) < config.context + 1:
        raise GfedgeError(f"{what} has {len(text):,} characters, fewer than one window of {config.context + 1}", "pass a longer text")
    return text


def exportable_from_model(lm: TrixLM, *, name: str, source: dict, lowering: str, text: str | None = None,
                          held: str | None = None) -> Exportable:
    """Golden cases are windows of `held`, else of the held-out split of `text` (default: the pydoc corpus),
    labelled with the next characters; int8 calibration runs the same windows."""
    config = lm.config
    if lowering == "dispatch_by_route" and _folded(config):
        raise GfedgeError(f"dispatch_by_route needs tile tensors of more than {FOLDED_ELEMENTS} elements "
                          f"(this model's: {config.n_tiles * config.d_model * config.d_hidden}): torch's exporter folds smaller ones",
                          "use gather_by_route or compute_all_select for this model")
    lm.eval()
    if held is None:
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
        spec=trix_spec(vocab_size=config.vocab_size, context=config.context, n_layers=config.n_layers,
                       batch_max=max_batch(context=config.context, d_model=config.d_model, d_hidden=config.d_hidden, lowering=lowering),
                       lowering=lowering),
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
