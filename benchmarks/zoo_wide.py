"""A weight-dominated zoo for the hard trace (`zoo_trace_hard.py --wide`): Atlas libraries whose
fp32 weights are ~64 MiB, so a bundle's resident cost is mostly its weights, not onnxruntime's
per-session memory.

Training a 17M-parameter core from scratch takes seconds per step on the shared 2-core hosts, so each
wide core is grown from a trained narrow one (Net2Net-style, function-preserving): the narrow core
(hidden 256, a 2048-unit block MLP, T = 1) is trained as usual; each unit of its state is copied 8
times and each block unit twice (a little noise breaks the symmetry), and every layer reading copied
units divides its weights by the number of copies, so the wide core (hidden 2048, block 4096)
computes nearly the same function; then the whole wide library is fine-tuned for a few steps. Char
accuracy is printed after each stage. T = 1 keeps serving at one pass through the block per position
(~1.6 GFLOP per 48-position request), so a replay of the trace stays in minutes.

Measured (benchmarks/RESULTS.md): fp32 bundles hold 70-76 MiB for 65 MiB of weights; fp16 holds as much
as fp32 on onnxruntime's CPU provider (its weights are upcast in the session); int8 31-38 MiB.

Zoo: library `a` (texts 0-1: fp32, fp16, int8, int4), `b` (texts 2-3: fp32, fp16, int8) and the
small generalist `gen` of zoo_trace.py (texts 0-5, the only model for texts 4-5).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from zoo_trace import LIBRARIES, _digest, _train

NARROW = {"hidden": 256, "block_hidden": 2048, "T": 1, "steps": 400}
FINETUNE = {"steps": 12, "lr": 1e-3}
# hidden 256 -> 2048 and block 2048 -> 4096: 2 x 2048 x 4096 = 16.8M block weights (64 MiB fp32). Widening the
# state as well as the block keeps activations small next to the weights: a 300-position warm-up run holds
# ~300 x (3 x 2048 + 2 x 4096) floats (~16 MiB), where a 256-wide state with a 32768-unit block held ~160 MiB.
WIDE = {**NARROW, "widen": {"hidden": 8, "block_hidden": 2}, "finetune": FINETUNE}
WIDE_LIBRARIES = {
    "a": ((0, 1), WIDE, ("fp32", "fp16", "int8", "int4")),
    "b": ((2, 3), WIDE, ("fp32", "fp16", "int8")),
    "gen": LIBRARIES["gen"],
}


def train_wide(path: Path, texts: dict[str, str], overrides: dict) -> Path:
    """`zoo_trace._train`, plus widening and a fine-tune when the recipe asks for them."""
    if "widen" not in overrides:
        return _train(path, texts, overrides)
    if path.is_file():
        return path
    from geofractal_edge.models.atlas.checkpoint import load_checkpoint, save_checkpoint

    narrow = {k: v for k, v in overrides.items() if k not in ("widen", "finetune")}
    narrow_path = _train(path.with_name(f"narrow-{_digest({'texts': texts, 'config': narrow})}.safetensors"), texts, narrow)
    library, _ = load_checkpoint(narrow_path)
    started = time.perf_counter()
    wide = widen(library, **overrides["widen"])
    print(f"widened {path.stem}: {_parameters(library)} -> {_parameters(wide)} core parameters, {_accuracy(wide, texts)} before fine-tuning", flush=True)
    finetune(wide, texts, **overrides["finetune"])
    print(f"fine-tuned {path.stem} in {time.perf_counter() - started:.0f} s: {_accuracy(wide, texts)}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, wide, texts)
    return path


def widen(library, *, hidden: int, block_hidden: int, noise: float = 1e-3, seed: int = 0):
    """A library whose state is `hidden` x and block MLP `block_hidden` x as wide, computing (nearly) the same function.

    Every unit is copied (copy c of unit j is unit c * n + j); a layer that reads copied units divides its
    weights by the number of copies, so its output is unchanged; a little noise breaks the symmetry.
    """
    import torch

    from geofractal_edge.models.atlas.modules import AtlasLibrary

    config = dataclasses.replace(library.config, hidden=library.config.hidden * hidden, block_hidden=library.config.block_hidden * block_hidden)
    old = library.state_dict()
    generator = torch.Generator().manual_seed(seed)

    def tile(name: str, rows: int, cols: int = 1) -> torch.Tensor:  # rows: copies of each output unit; cols: of each input
        w = old[name]
        w = w.repeat(rows) if w.dim() == 1 else w.repeat(rows, cols) / cols
        return w + noise * float(w.std()) * torch.randn(w.shape, generator=generator)

    state = dict(old)
    for layer, rows, cols in (("feature_proj", hidden, 1), ("key_proj", hidden, 1), ("block.0", block_hidden, hidden), ("block.2", hidden, block_hidden), ("out", 1, hidden)):
        for part in ("weight", "bias"):
            if f"core.{layer}.{part}" in old:
                state[f"core.{layer}.{part}"] = tile(f"core.{layer}.{part}", rows, cols)
    wide = AtlasLibrary(config, library.names)
    wide.load_state_dict(state)
    return wide.eval()


def finetune(library, texts: dict[str, str], *, steps: int, lr: float) -> None:
    """A few full-batch steps of the library trainer's own loop on the wide library."""
    from geofractal_edge.models.atlas.modules import AtlasLibrary
    from geofractal_edge.models.atlas.train import _fit, _library_data

    config = dataclasses.replace(library.config, lr=lr, sparse_update_prob=0.0, batch_size=sum(len(t) for t in texts.values()))
    tuned = AtlasLibrary(config, library.names)
    tuned.load_state_dict(library.state_dict())
    x, y, owner = _library_data(texts, config.vocab)
    _fit(tuned, x, y, owner, steps=steps, progress=None)
    library.load_state_dict(tuned.state_dict())  # the saved config keeps the recipe's lr and batch
    library.eval()


def _parameters(library) -> str:
    return f"{sum(p.numel() for p in library.core.parameters()) / 1e6:.2f}M"


def _accuracy(library, texts: dict[str, str]) -> str:
    from geofractal_edge.models.atlas.train import char_accuracy

    return ", ".join(f"{name} {100 * char_accuracy(library.core, texts[name], library.keys[i].detach(), library.config.vocab):.1f}%" for i, name in enumerate(library.names))
