"""Train a TriX LM (or its dense baseline) on the pydoc corpus and measure held-out bits per character.

Deterministic under a fixed seed: weight init and batch offsets are drawn after seeding inside a
forked RNG, so callers' RNG state is untouched. Both FFN kinds get exactly the same batches, steps,
optimiser and schedule; only the FFN differs. The held-out score is always taken in eval mode, i.e.
with the hard argmax routing that is deployed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from geofractal_edge.models.trix.config import TrixConfig
from geofractal_edge.models.trix.data import check_sizes, corpus, encode, eval_windows, random_batch, split
from geofractal_edge.models.trix.lm import TrixLM, bits_per_char

Progress = Callable[[int, int, float], None]  # (step, total, loss)


def train_lm(
    config: TrixConfig,
    *,
    ffn: str = "trix",
    steps: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    text: str | None = None,
) -> tuple[TrixLM, dict]:
    """Train on the train split of `text` (default: the pydoc corpus); report held-out bits/char.

    Loss: cross-entropy + `balance_weight` x the TriX load-balancing term + `route_margin_weight` x
    the route-margin hinge (routes that survive quantization noise). AdamW with a one-cycle
    schedule; the routing temperature decays geometrically from `temperature_start` to
    `temperature_end`; hierarchical clusters are rebuilt every `recluster_every` steps and once at
    the end, so the deployed grouping matches the final signatures.
    """
    steps = config.steps if steps is None else steps
    text = corpus() if text is None else text
    check_sizes(text, context=config.context, held_out_fraction=config.held_out_fraction)  # before any training
    train_text, held_text = split(text, config.held_out_fraction)
    train_ids, held_ids = encode(train_text, config.vocab), encode(held_text, config.vocab)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TrixLM(config, ffn=ffn)
        generator = torch.Generator().manual_seed(seed)
        final_loss = _fit(model, train_ids, steps=steps, generator=generator, progress=progress)
    model.rebuild_hierarchy()
    for ffn_module in model.trix_ffns():
        ffn_module.aux_loss = ffn_module.margin_loss = None  # drop the last step's autograd graph
    model.eval()
    train_seconds = time.perf_counter() - start
    held_bpc, usage = evaluate(model, held_ids)
    report = {
        "ffn": ffn,
        "held_out_bpc": held_bpc,
        "held_out_chars": len(held_text),
        "train_chars": len(train_text),
        "steps": steps,
        "tokens_seen": steps * config.batch_size * config.context,
        "final_loss": final_loss,
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - start,
        **model.parameter_counts(),
    }
    if usage is not None:
        report["tile_usage"] = usage
    return model, report


@torch.no_grad()
def evaluate(model: TrixLM, ids: torch.Tensor, *, batch_size: int = 64) -> tuple[float, list[list[float]] | None]:
    """(bits per char over non-overlapping context windows of `ids`, per-layer tile usage fractions or None), eval mode."""
    was_training = model.training
    model.eval()
    for ffn in model.trix_ffns():
        ffn.reset_usage()
    inputs, targets = eval_windows(ids, context=model.config.context)
    total = 0.0
    for begin in range(0, len(inputs), batch_size):
        logits = model(inputs[begin : begin + batch_size])
        total += float(F.cross_entropy(logits.flatten(0, 1), targets[begin : begin + batch_size].flatten(), reduction="sum"))
    model.train(was_training)
    usage = [(ffn.usage.double() / max(int(ffn.usage.sum()), 1)).tolist() for ffn in model.trix_ffns()] or None
    return bits_per_char(total / targets.numel()), usage


def temperature_at(config: TrixConfig, step: int, steps: int) -> float:
    """Geometric decay from temperature_start (step 0) to temperature_end (last step)."""
    frac = step / max(steps - 1, 1)
    return config.temperature_start * (config.temperature_end / config.temperature_start) ** frac


WARM_UP = 0.1  # the share of the steps over which the learning rate rises to config.lr


def warm_up_share(steps: int) -> float:
    """WARM_UP, or 0 where the warm-up would span exactly one step: torch's OneCycleLR then divides by zero (a phase
    from step 0 to step 0), which `gfedge train trix --steps 10` hit. Other step counts keep their schedule."""
    return 0.0 if float(WARM_UP * max(steps, 1)) - 1 == 0 else WARM_UP


def _fit(model: TrixLM, ids: torch.Tensor, *, steps: int, generator: torch.Generator, progress: Progress | None) -> float:
    """The training loop; returns the last batch's cross-entropy (nats)."""
    config = model.config
    model.train()
    model.set_route_margin(config.route_margin if config.route_margin_weight > 0 else 0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=max(steps, 1), pct_start=warm_up_share(steps), anneal_strategy="cos", div_factor=10.0,
        final_div_factor=20.0
    )
    loss_value = math.nan
    for step in range(steps):
        if step and config.recluster_every and step % config.recluster_every == 0:
            model.rebuild_hierarchy()
        model.set_temperature(temperature_at(config, step, steps))
        inputs, targets = random_batch(ids, batch_size=config.batch_size, context=config.context, generator=generator)
        logits = model(inputs)
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss = ce + config.balance_weight * model.aux_loss() + config.route_margin_weight * model.margin_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        schedule.step()
        loss_value = float(ce.detach())
        if progress is not None:
            progress(step + 1, steps, loss_value)
    return loss_value
