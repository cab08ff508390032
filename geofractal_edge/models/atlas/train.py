"""Training: a library (core + one key per text, jointly) and key-only (a new key, frozen core).

Both are bit-deterministic under a fixed seed and a fixed torch thread count (CPU matmuls block
differently for 1 and 2 threads): all randomness (key init, weight init, batch order, sparse-update
masks) is drawn after seeding inside a forked RNG, so callers' RNG state is untouched.

Default library (8 texts x <= 2400 chars, default config): ~55 s on 2 idle CPU cores, >= 99.9% per key.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.atlas.config import AtlasConfig
from geofractal_edge.models.atlas.data import build_vocab, coordinates, encode
from geofractal_edge.models.atlas.modules import AtlasCore, AtlasLibrary

Progress = Callable[[int, int, float], None]


def train_library(
    texts: dict[str, str],
    *,
    config: AtlasConfig | None = None,
    steps: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[AtlasLibrary, dict]:
    """Train one core and one key per text; report per-key char accuracy, seconds and steps.

    Mini-batches mix positions of all texts (one key per position), drawn from a fresh permutation
    each epoch so every character is seen once per epoch. Adam with a one-cycle schedule.
    """
    if not texts:
        raise GfedgeError("no texts to train on", "pass at least one text")
    config = config or AtlasConfig.default(build_vocab(texts.values()), max_chars=max(len(text) for text in texts.values()))
    steps = config.steps if steps is None else steps
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        library = AtlasLibrary(config, list(texts))
        x, y, owner = _library_data(texts, config.vocab)
        loss = _fit(library, x, y, owner, steps=steps, progress=progress)
    library.eval()
    accuracy = {name: char_accuracy(library.core, texts[name], library.keys[i].detach(), config.vocab) for i, name in enumerate(library.names)}
    report = {
        "accuracy": accuracy,
        "min_accuracy": min(accuracy.values()),
        "seconds": time.perf_counter() - start,
        "steps": steps,
        "final_loss": loss,
        "core_parameters": sum(p.numel() for p in library.core.parameters()),
    }
    return library, report


def train_key(
    core: AtlasCore,
    text: str,
    *,
    steps: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[Tensor, float]:
    """Learn a key for a new text against the frozen `core`; returns (key [key_dim], char accuracy).

    The core's parameters get requires_grad=False and stay bit-identical; the core runs in eval mode
    (all T updates) because the key must work under exactly the computation that will be exported.
    """
    config = core.config
    steps = config.key_steps if steps is None else steps
    was_training = core.training
    core.eval()
    for param in core.parameters():
        param.requires_grad_(False)
    x = coordinates(len(text))
    y = encode(text, config.vocab)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        key = nn.Parameter(torch.randn(config.key_dim) * config.key_init_std)
        optimizer = torch.optim.Adam([key], lr=config.key_lr)
        schedule = _one_cycle(optimizer, lr=config.key_lr, steps=steps)
        for step in range(steps):
            loss = nn.functional.cross_entropy(core(x, key), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if progress is not None:
                progress(step + 1, steps, float(loss.detach()))
    core.train(was_training)
    key = key.detach().clone()
    return key, char_accuracy(core, text, key, config.vocab)


@torch.no_grad()
def char_accuracy(core: AtlasCore, text: str, key: Tensor, vocab: str) -> float:
    """Fraction of characters whose argmax logit is the true character, in eval mode."""
    was_training = core.training
    core.eval()
    predicted = core(coordinates(len(text)), key.detach().float()).argmax(dim=1)
    core.train(was_training)
    return float((predicted == encode(text, vocab)).float().mean())


def _library_data(texts: dict[str, str], vocab: str) -> tuple[Tensor, Tensor, Tensor]:
    """All texts flattened: x [M] float32, target ids [M], owner (key index) [M]."""
    xs, ys, owners = [], [], []
    for i, text in enumerate(texts.values()):
        xs.append(coordinates(len(text)))
        ys.append(encode(text, vocab))
        owners.append(torch.full((len(text),), i, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys), torch.cat(owners)


def _fit(library: AtlasLibrary, x: Tensor, y: Tensor, owner: Tensor, *, steps: int, progress: Progress | None) -> float:
    """Adam + one-cycle over mixed mini-batches; returns the last batch loss.

    Sparse updates run for the first `sparse_update_until` of the steps only: the rest train the
    exact all-T computation that eval mode and the exported graph use.
    """
    config = library.config
    library.train()
    optimizer = torch.optim.AdamW(library.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = _one_cycle(optimizer, lr=config.lr, steps=steps)
    batches = _batches(len(x), config.batch_size)
    sparse_steps = round(config.sparse_update_until * steps)
    loss_value = float("nan")
    for step in range(steps):
        index = next(batches)
        skip = config.sparse_update_prob if step < sparse_steps else 0.0
        loss = nn.functional.cross_entropy(library(x[index], owner[index], sparse_update_prob=skip), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_value = float(loss.detach())
        if progress is not None:
            progress(step + 1, steps, loss_value)
    return loss_value


def _batches(n: int, batch_size: int):
    """Endless index batches: a fresh permutation per epoch, cut into `batch_size` pieces."""
    batch_size = min(batch_size, n)
    while True:
        order = torch.randperm(n)
        for begin in range(0, n - batch_size + 1, batch_size):
            yield order[begin : begin + batch_size]


def _one_cycle(optimizer: torch.optim.Optimizer, *, lr: float, steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15, anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0)
