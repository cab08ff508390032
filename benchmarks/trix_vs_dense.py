"""TriX LM vs a dense baseline with the same active FFN parameters per token, side by side in one run.

Both models are built from `TrixConfig.default` (the dense FFN is one tile's shape, in float) and get
the same training budget: same steps, batch size, context, optimiser, schedule, seed and therefore
the same batches. Quality is held-out bits per character on the last 10% of the pydoc corpus, with
TriX routing hard (argmax, one tile per token) as deployed. Acceptance: TriX <= 1.05 x dense.
Usage: python benchmarks/trix_vs_dense.py [--steps N] [--threads N] [--seed N]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from geofractal_edge.models.trix.config import TrixConfig
from geofractal_edge.models.trix.data import build_vocab, corpus
from geofractal_edge.models.trix.train import train_lm

from _report import progress

# One thread: on a 2-core machine shared with other work, 2 OpenMP threads stall at every barrier
# whenever a sibling is descheduled (measured 5-10x slower steps under load), and these matrices are
# too small for a second thread to win much when the machine is quiet. --threads overrides it.
THREADS = 1


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps for both models (default: the config's)")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch threads (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="one seed for both models: init and batches (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    text = corpus()
    config = TrixConfig.default(build_vocab(text))
    steps = config.steps if args.steps is None else args.steps
    print(
        f"pydoc corpus {len(text)} chars, vocab {config.vocab_size}; d_model {config.d_model}, {config.n_layers} layers, "
        f"context {config.context}, batch {config.batch_size}, {steps} steps, seed {args.seed}, {args.threads} thread(s)"
    )
    print(f"TriX: {config.n_tiles} ternary tiles of d_hidden {config.d_hidden}, {config.routing} routing; dense: one float FFN of d_hidden {config.d_hidden}")
    reports = {}
    for ffn in ("dense", "trix"):
        _, reports[ffn] = train_lm(config, ffn=ffn, steps=steps, seed=args.seed, progress=progress(ffn))
    print(f"{'model':>6} {'held-out bpc':>12} {'params':>9} {'active FFN/token':>16} {'train s':>8} {'eval s':>7}")
    for ffn, r in reports.items():
        print(f"{ffn:>6} {r['held_out_bpc']:>12.4f} {r['total']:>9} {r['ffn_active_per_token']:>16} {r['train_seconds']:>8.1f} {r['seconds'] - r['train_seconds']:>7.1f}")
    usage = reports["trix"].get("tile_usage") or []
    for layer, fractions in enumerate(usage):
        print(f"  trix layer {layer} tile usage on held-out: {' '.join(f'{f:.2f}' for f in fractions)}")
    ratio = reports["trix"]["held_out_bpc"] / reports["dense"]["held_out_bpc"]
    verdict = "PASS" if ratio <= 1.05 else "FAIL"
    print(f"trix/dense held-out bpc ratio = {ratio:.4f} (<= 1.05: {verdict}); total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
