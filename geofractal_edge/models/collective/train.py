"""Training, in one process or under `torchrun` (DDP, gloo on CPU), with one results format.

Deterministic under a fixed seed: weight init, batch order, shifts and dropout are drawn inside a
forked RNG. Batches are drawn from one generator seeded alike on every rank, so all ranks agree on
the global batch; each rank takes every world_size-th sample of it and DDP averages the gradients,
which is the single-process gradient (equal shards, mean losses). Only rank 0 evaluates and writes.

    torchrun --nproc_per_node 2 -m geofractal_edge.models.collective.train --out ckpt.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.collective.collective import RouterCollective
from geofractal_edge.models.collective.config import CollectiveConfig
from geofractal_edge.models.collective.data import DigitsSplit, digits_split, shift_images

Progress = Callable[[int, int, float], None]  # (step, total, loss)


def train_collective(config: CollectiveConfig, *, split: DigitsSplit | None = None, epochs: int | None = None, seed: int = 0, progress: Progress | None = None) -> tuple[RouterCollective, dict]:
    """Build a collective from `config` and train it on the digits split; (collective, report)."""
    split = split or digits_split()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        collective = RouterCollective(config)
        report = fit(collective, (split.x_train, split.y_train), (split.x_test, split.y_test), epochs=epochs, seed=seed, progress=progress)
    return collective, report


def train_text_collective(config: CollectiveConfig, *, ports: dict | None = None, split=None, epochs: int | None = None, seed: int = 0, progress: Progress | None = None) -> tuple[RouterCollective, dict]:
    """A collective of frozen-encoder streams on the pydoc topic task; (collective, report).

    The encoder is frozen, so every sentence is embedded once and the streams train on the
    embeddings, exactly the input the exported graph takes (the encoder is its own bundle)."""
    from geofractal_edge.models.collective.text_data import topic_split

    split = split or topic_split()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        collective = RouterCollective(config, ports=ports)
        port = next(iter(collective.streams.values())).port
        report = fit(collective, (embed_texts(port, split.train_texts), split.y_train), (embed_texts(port, split.test_texts), split.y_test), epochs=epochs, seed=seed, progress=progress)
    return collective, {**report, "task": "pydoc-topics"}


@torch.no_grad()
def embed_texts(port, texts: list[str], *, batch: int = 64) -> Tensor:
    """[N, E] sentence embeddings from the frozen encoder behind `port`, in batches."""
    return torch.cat([port.encode(texts[i : i + batch]) for i in range(0, len(texts), batch)])


def fit(collective: RouterCollective, train: tuple, val: tuple | None = None, *, epochs: int | None = None, seed: int = 0, threads: int = 1, progress: Progress | None = None) -> dict:
    """AdamW + one-cycle over shuffled mini-batches; only parameters with requires_grad train
    (with frozen streams: projections, routers, mailbox, fusion and head). Returns the report.

    `train` / `val` are (inputs, labels [N]); inputs a tensor [N, ...] shared by all streams, or
    {stream: tensor or {name: tensor}} (e.g. a frozen text stream's token batch), batch axis first.

    Runs with `threads` intra-op threads (restored afterwards): the matrices are tiny, and on a
    shared 2-core host two threads made a step ~50x slower than one (spinning thread pools).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _fit(collective, train, val, epochs=epochs, seed=seed, progress=progress)
    finally:
        torch.set_num_threads(before)


def _fit(collective: RouterCollective, train, val, *, epochs: int | None, seed: int, progress: Progress | None) -> dict:
    config = collective.config
    rank, world = _rank_world()
    if config.batch_size % world:
        raise GfedgeError(f"batch_size {config.batch_size} is not divisible by {world} processes", "pick a batch size that is a multiple of the process count")
    epochs = config.epochs if epochs is None else epochs
    x, y = train
    per_epoch = max(1, len(y) // config.batch_size)
    total = epochs * per_epoch
    model = _wrap(collective, world)
    optimizer = torch.optim.AdamW(collective.trainable_parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=max(total, 1), pct_start=0.15, div_factor=10.0, final_div_factor=100.0)
    order_rng = torch.Generator().manual_seed(seed)
    start, history, loss_value = time.perf_counter(), [], float("nan")
    collective.train()
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=order_rng)
        for step in range(per_epoch):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            xb = shift_images(x[index], order_rng) if config.shift_augment and _is_images(x) else _take(x, index)
            xb, yb = _take(xb, slice(rank, None, world)), y[index][rank::world]  # this rank's shard of the global batch
            logits, info = model(xb)
            loss = nn.functional.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
            if config.route_margin_weight > 0:
                loss = loss + config.route_margin_weight * torch.relu(config.route_margin - info["slot_margins"]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_value = float(loss.detach())
            if progress is not None and rank == 0:
                progress(epoch * per_epoch + step + 1, total, loss_value)
        if val is not None and rank == 0:
            history.append(round(accuracy(collective, *val), 6))
            collective.train()
    collective.eval()
    report = {
        "accuracy": history[-1] if history else None,
        "history": history,
        "epochs": epochs,
        "steps": total,
        "seconds": round(time.perf_counter() - start, 3),
        "world_size": world,
        "final_loss": loss_value,
        "trainable_parameters": sum(p.numel() for p in collective.trainable_parameters()),
    }
    return report


@torch.no_grad()
def accuracy(collective: nn.Module, x, y: Tensor, *, batch: int = 512) -> float:
    """Share of samples whose argmax logit is the label, in eval mode."""
    predict = predictions(collective, x, batch=batch)
    return float((predict == y).float().mean())


@torch.no_grad()
def probabilities(collective: nn.Module, x, *, batch: int = 512, n: int | None = None) -> Tensor:
    """Softmax outputs [N, C] in eval mode (for averaging ensembles); inputs as in `fit`."""
    was = collective.training
    collective.eval()
    n = n if n is not None else _rows(x)
    out = torch.cat([torch.softmax(_logits(collective(_take(x, slice(i, i + batch)))), dim=-1) for i in range(0, n, batch)])
    collective.train(was)
    return out


def predictions(collective: nn.Module, x, *, batch: int = 512) -> Tensor:
    return probabilities(collective, x, batch=batch).argmax(dim=-1)


def _logits(out) -> Tensor:
    return out[0] if isinstance(out, tuple) else out


def _is_images(x) -> bool:
    return isinstance(x, Tensor) and x.ndim == 2 and x.shape[1] == 64


def _rows(x) -> int:
    return _rows(next(iter(x.values()))) if isinstance(x, Mapping) else len(x)


def _take(x, index):
    """Rows `index` of a tensor, or of every tensor in a (nested) mapping such as {stream: tokens}."""
    if isinstance(x, Mapping):
        return {k: _take(v, index) for k, v in x.items()}
    return x[index]


def _rank_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _wrap(collective: RouterCollective, world: int) -> nn.Module:
    if world == 1:
        return collective
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(collective)


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python -m` and `torchrun`: train, then rank 0 writes checkpoint and report."""
    parser = argparse.ArgumentParser(description="Train a router collective on digits (one process or torchrun).")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write (.safetensors)")
    parser.add_argument("--config", choices=("digits", "tiny"), default="digits")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path, default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    from geofractal_edge.models.collective.checkpoint import save_checkpoint

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        torch.distributed.init_process_group("gloo")
    try:
        config = CollectiveConfig.digits() if args.config == "digits" else CollectiveConfig.tiny()
        collective, report = train_collective(config, epochs=args.epochs, seed=args.seed)
        if _rank_world()[0] == 0:
            save_checkpoint(args.out, collective, report=report)
            if args.report is not None:
                args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            print(json.dumps({**report, "out": str(args.out)}, indent=2))
    finally:
        if distributed:
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
