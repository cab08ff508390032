"""Ablation of the digits collective, on the fixed held-out split (450 images), in one run.

Rows: each stream trained alone (the same stream + router + classifier, nothing else); a plain
averaging ensemble of those stream-alone models (mean of their softmax outputs); the collective
without its mailbox; without fingerprints; and the full collective. Every model trains with the
same recipe (CollectiveConfig.digits(): epochs, optimizer, augmentation) and the same seeds.
With several seeds it prints mean and spread; one held-out image is 0.22 points.

    python benchmarks/collective_ablation.py [--seeds 0 1 2] [--epochs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def variants(config):
    """(name, config) of every trained model, stream-alone ones first."""
    alone = [(f"alone: {s.name} ({s.kind}{', ' + s.view if s.kind == 'feature' else ''})", config.replace(streams=(s,), mailbox=False)) for s in config.streams]
    return alone, [
        ("collective, no mailbox", config.replace(mailbox=False)),
        ("collective, no fingerprints", config.replace(fingerprints=False)),
        ("collective (full)", config),
    ]


def run(seeds: list[int], epochs: int | None) -> list[dict]:
    import torch

    from geofractal_edge.models.collective import CollectiveConfig, digits_split, train_collective
    from geofractal_edge.models.collective.train import accuracy, probabilities

    split = digits_split()
    config = CollectiveConfig.digits()
    alone, collectives = variants(config)
    scores: dict[str, list[float]] = {}
    info: dict[str, dict] = {}

    def record(name: str, acc: float, model=None, seconds: float = 0.0) -> None:
        scores.setdefault(name, []).append(100.0 * acc)
        if model is not None:
            info[name] = {"params": sum(p.numel() for p in model.parameters()), "seconds": info.get(name, {}).get("seconds", 0.0) + seconds}

    for seed in seeds:
        probs = []
        for name, cfg in alone:
            model, report = train_collective(cfg, split=split, epochs=epochs, seed=seed)
            record(name, accuracy(model, split.x_test, split.y_test), model, report["seconds"])
            probs.append(probabilities(model, split.x_test))
            print(f"  seed {seed}: {name}: {scores[name][-1]:.2f}%", file=sys.stderr, flush=True)
        ensemble = torch.stack(probs).mean(dim=0).argmax(dim=-1)
        record("averaging ensemble of the streams alone", float((ensemble == split.y_test).float().mean()))
        for name, cfg in collectives:
            model, report = train_collective(cfg, split=split, epochs=epochs, seed=seed)
            record(name, accuracy(model, split.x_test, split.y_test), model, report["seconds"])
            print(f"  seed {seed}: {name}: {scores[name][-1]:.2f}%", file=sys.stderr, flush=True)
    ensemble_params = sum(info[name]["params"] for name, _ in alone)
    info["averaging ensemble of the streams alone"] = {"params": ensemble_params, "seconds": sum(info[name]["seconds"] for name, _ in alone)}
    order = [name for name, _ in alone] + ["averaging ensemble of the streams alone"] + [name for name, _ in collectives]
    return [{"model": name, "accuracy": scores[name], "params": info[name]["params"], "train_seconds": round(info[name]["seconds"] / len(seeds), 1)} for name in order]


def render(rows: list[dict], seeds: list[int], seconds: float) -> str:
    lines = [
        f"Digits held-out accuracy (450 images, stratified split seed 0), seeds {seeds}, CPU, {seconds:.0f} s in all",
        "",
        "| model | held-out accuracy % | per seed | trainable params | train s / seed |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        acc = row["accuracy"]
        spread = f" ± {statistics.stdev(acc):.2f}" if len(acc) > 1 else ""
        lines.append(f"| {row['model']} | {statistics.mean(acc):.2f}{spread} | {', '.join(f'{a:.2f}' for a in acc)} | {row['params']:,} | {row['train_seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="override the digits config's epochs (for a quick look)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = run(args.seeds, args.epochs)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(render(rows, args.seeds, time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
