"""Training half of benchmarks/trix_wide.py: one weight-dominated TriX config, three FFN variants, one budget.

Hierarchical TriX, flat TriX and dense (one float FFN of one tile's shape: the same active FFN
parameters per token) get the same steps, batch, context, optimiser, schedule, seed and therefore
the same batches; held-out bits/char on the same last 10% of the pydoc corpus, hard routing as
deployed. Checkpoints (.safetensors) and reports (JSON) are cached in the work directory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from geofractal_edge.artifacts.atomic import write_bytes
from geofractal_edge.models.trix.checkpoint import load_checkpoint, save_checkpoint
from geofractal_edge.models.trix.config import TrixConfig
from geofractal_edge.models.trix.data import build_vocab, corpus, encode, eval_windows, split
from geofractal_edge.models.trix.ffn import flat_route
from geofractal_edge.models.trix.lm import TrixLM
from geofractal_edge.models.trix.train import evaluate, train_lm

from _report import progress

VARIANTS = {"hier": ("trix", "hierarchical"), "flat": ("trix", "flat"), "dense": ("dense", "flat")}


def wide_config(vocab: str, *, routing: str, steps: int, batch: int) -> TrixConfig:
    """64 tiles of 256 x 256 (up and down) per layer, 2 layers: 16.8M tile weights, 67 MB at float32.

    recluster_every scales with the budget (the default 100 of 1500 steps: about 15 re-clusterings).
    """
    return TrixConfig(vocab=vocab, d_model=256, n_heads=4, n_layers=2, context=64, n_tiles=64, d_hidden=256, routing=routing,
                      steps=steps, batch_size=batch, recluster_every=max(1, steps // 15))


def checkpoint_path(work: Path, name: str) -> Path:
    return work / f"{name}.safetensors"


def train_all(work: Path, *, steps: int, batch: int, seed: int) -> dict[str, dict]:
    """Train the three variants (same budget and seed), cache them in `work`, return their reports."""
    text = corpus()
    vocab = build_vocab(text)
    reports = {}
    for name, (ffn, routing) in VARIANTS.items():
        config = wide_config(vocab, routing=routing, steps=steps, batch=batch)
        model, report = train_lm(config, ffn=ffn, steps=steps, seed=seed, progress=progress(name), text=text)
        save_checkpoint(checkpoint_path(work, name), model, report=report, text=text)
        reports[name] = report
        print(f"  {name}: held-out bpc {report['held_out_bpc']:.4f}, {report['train_seconds']:.0f} s", file=sys.stderr, flush=True)
    if "hier" in reports:
        reports["hier"]["agreement"] = route_agreement(load_checkpoint(checkpoint_path(work, "hier")), text)
    write_bytes(work / "train.json", json.dumps(reports, indent=1, default=str).encode())
    return reports


@torch.no_grad()
def route_agreement(model: TrixLM, text: str) -> dict:
    """On the held-out windows: per layer, the fraction of tokens whose hierarchical route is the flat argmax's
    tile over the same signatures, and the held-out bpc of the same weights routed flat instead."""
    held_ids = encode(split(text, model.config.held_out_fraction)[1], model.config.vocab)
    inputs, _ = eval_windows(held_ids, context=model.config.context)
    agree = {i: [0, 0] for i in range(model.config.n_layers)}

    def hook(layer: int):
        def record(module, args, output) -> None:
            x = args[0].reshape(-1, module.d_model).float()
            same = module.route(x) == flat_route(x, module.signatures())[0]
            agree[layer][0] += int(same.sum())
            agree[layer][1] += same.numel()

        return record

    ffns = model.trix_ffns()
    handles = [ffn.register_forward_hook(hook(i)) for i, ffn in enumerate(ffns)]
    for begin in range(0, len(inputs), 64):
        model(inputs[begin : begin + 64])
    for handle in handles:
        handle.remove()
    for ffn in ffns:  # the same weights, routed by the flat argmax
        ffn.routing = "flat"
    flat_bpc, _ = evaluate(model, held_ids)
    for ffn in ffns:
        ffn.routing = "hierarchical"
    return {"per_layer": [a / max(n, 1) for a, n in agree.values()], "tokens": agree[0][1], "bpc_routed_flat": flat_bpc}
