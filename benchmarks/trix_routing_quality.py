"""Does 2-level (hierarchical) TriX routing lose quality against flat argmax routing, trained to the default budget?

    python benchmarks/trix_routing_quality.py [--steps 1500] [--tiles 64] [--width 64] [--seeds 0] [--work .bench/trix_routing_quality]

benchmarks/trix_wide.py answers this on the weight-dominated model (64 tiles of 256 x 256), but one of its steps
takes ~1.7 s on this host, so it trains 150 steps: far from converged. This trains the same three variants as
trix_wide_train.py (hierarchical TriX, flat TriX, dense: one float FFN of one tile's shape, the same active FFN
parameters per token) with the same tile count per layer and routing structure (64 tiles, round(sqrt(64)) = 8
clusters) but narrow tiles (d_model = d_hidden = --width), so the default budget of TrixConfig (1500 steps of 16
windows of 64 characters) runs in minutes on one core. Same corpus (pydoc topics), split, steps, batches,
optimiser, schedule and seed for every variant; held-out bits/char with hard routing as deployed. For the
hierarchical model also: per layer, how often its route is the flat argmax's over the same signatures, and the
held-out bpc of the same weights routed flat.

Prints one row per variant and seed and a summary; writes results.json in the work directory (gitignored).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import progress, uptime  # noqa: E402
from trix_wide_train import VARIANTS, route_agreement  # noqa: E402

from geofractal_edge.artifacts.atomic import write_bytes  # noqa: E402
from geofractal_edge.models.trix.config import TrixConfig  # noqa: E402
from geofractal_edge.models.trix.data import build_vocab, corpus  # noqa: E402
from geofractal_edge.models.trix.train import train_lm  # noqa: E402

WORK = Path(__file__).resolve().parents[1] / ".bench" / "trix_routing_quality"


def narrow_config(vocab: str, *, routing: str, steps: int, tiles: int, width: int) -> TrixConfig:
    """The TriX defaults (2 layers, context 64, batch 16, lr, schedule), `tiles` tiles of width x width per layer."""
    return TrixConfig(vocab=vocab, d_model=width, n_heads=2, n_layers=2, context=64, n_tiles=tiles, d_hidden=width,
                      routing=routing, steps=steps, recluster_every=max(1, steps // 15))


def run(*, steps: int, tiles: int, width: int, seeds: list[int]) -> list[dict]:
    text = corpus()
    vocab = build_vocab(text)
    rows = []
    for seed in seeds:
        for name, (ffn, routing) in VARIANTS.items():
            config = narrow_config(vocab, routing=routing, steps=steps, tiles=tiles, width=width)
            model, report = train_lm(config, ffn=ffn, steps=steps, seed=seed, progress=progress(f"{name} seed {seed}"), text=text)
            row = {"variant": name, "seed": seed, "held_out_bpc": report["held_out_bpc"], "train_seconds": report["train_seconds"],
                   "final_loss": report["final_loss"]}
            if name == "hier":
                row["agreement"] = route_agreement(model, text)
            rows.append(row)
            print(_row(row), flush=True)
    return rows


def _row(row: dict) -> str:
    extra = ""
    if "agreement" in row:
        a = row["agreement"]
        extra = (f"  routes = flat argmax: {', '.join(f'{x:.1%}' for x in a['per_layer'])}; "
                 f"same weights routed flat: {a['bpc_routed_flat']:.4f}")
    return f"{row['variant']:<6} seed {row['seed']}  held-out bpc {row['held_out_bpc']:.4f}  ({row['train_seconds']:.0f} s){extra}"


def summary(rows: list[dict]) -> list[str]:
    bpc = {name: statistics.median(r["held_out_bpc"] for r in rows if r["variant"] == name) for name in VARIANTS}
    lines = ["median held-out bpc: " + ", ".join(f"{k} {v:.4f}" for k, v in bpc.items()),
             f"hier / flat {bpc['hier'] / bpc['flat']:.4f}, hier / dense {bpc['hier'] / bpc['dense']:.4f}, "
             f"flat / dense {bpc['flat'] / bpc['dense']:.4f} (below 1: fewer bits per character, better)"]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="training steps per variant (default: %(default)s, TrixConfig's)")
    parser.add_argument("--tiles", type=int, default=64, help="tiles per layer (default: %(default)s)")
    parser.add_argument("--width", type=int, default=64, help="d_model and each tile's d_hidden (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.tiles} tiles of {args.width} x {args.width} per layer, 2 layers, {args.steps} steps of 16 x 64 characters, "
          f"{args.threads} torch thread(s); {uptime()}", flush=True)
    start = time.perf_counter()
    rows = run(steps=args.steps, tiles=args.tiles, width=args.width, seeds=args.seeds)
    for line in summary(rows):
        print(line)
    print(f"{time.perf_counter() - start:.0f} s; {uptime()}")
    args.work.mkdir(parents=True, exist_ok=True)
    write_bytes(args.work / "results.json", json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
