"""Key-only capacity curve of the default Atlas core.

Against the frozen default core (trained here on `default_texts()`, or loaded with --checkpoint),
train a new key for held-out real texts (pydoc topics not in the library, cut to each length) and
print char accuracy and seconds per length. One key holds key_dim floats, so accuracy must fall as
texts grow; this prints where. It claims nothing beyond the table it prints.

    python benchmarks/atlas_key_capacity.py [--checkpoint CKPT] [--lengths 50,100,...] [--texts 2] [--no-control]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from geofractal_edge.models.atlas import AtlasCore, AtlasLibrary, default_texts, held_out_texts, load_checkpoint, train_key, train_library

LENGTHS = (50, 100, 200, 400, 800, 1600, 2400)


def main() -> None:
    args = _parse()
    torch.set_num_threads(args.threads)
    library, texts = _core_library(args.checkpoint)
    core, vocab = library.core, library.config.vocab
    pool = held_out_texts(library.names, vocab, n_chars=max(args.lengths))
    names = list(pool)[: args.texts]
    print(f"held-out texts: {', '.join(names)}; key_dim {library.config.key_dim}; steps {args.steps or library.config.key_steps}")
    print(f"{'length':>7} {'char acc (mean)':>16} {'min':>8} {'seconds/key':>12}")
    for length in args.lengths:
        accuracies, seconds = [], []
        for name in names:
            start = time.perf_counter()
            _, accuracy = train_key(core, pool[name][:length], steps=args.steps, seed=0)
            seconds.append(time.perf_counter() - start)
            accuracies.append(accuracy)
        print(f"{length:>7} {100 * statistics.mean(accuracies):>15.2f}% {100 * min(accuracies):>7.2f}% {statistics.mean(seconds):>12.2f}", flush=True)
    if args.control:
        _control(core, texts, steps=args.steps)


def _control(core: AtlasCore, texts: dict[str, str], *, steps: int | None) -> None:
    """Re-learn a library text's key from a random start: tells optimiser failure from missing capacity."""
    name = min(texts, key=lambda n: len(texts[n]))
    start = time.perf_counter()
    _, accuracy = train_key(core, texts[name], steps=steps, seed=0)
    print(f"control: library text '{name}' ({len(texts[name])} chars) re-learned from a random key: {100 * accuracy:.2f}% in {time.perf_counter() - start:.1f} s")


def _core_library(checkpoint: Path | None) -> tuple[AtlasLibrary, dict[str, str]]:
    """The frozen core's library: loaded, or trained now on the default texts (~1 minute)."""
    if checkpoint is not None:
        library, texts = load_checkpoint(checkpoint)
        print(f"core: {checkpoint}")
        return library, texts
    texts = default_texts()
    library, report = train_library(texts, seed=0)
    print(f"core: default library trained here in {report['seconds']:.1f} s, min per-key accuracy {100 * report['min_accuracy']:.2f}%")
    return library, texts


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="an Atlas library checkpoint (default: train the default library)")
    parser.add_argument("--lengths", type=lambda s: [int(v) for v in s.split(",")], default=list(LENGTHS))
    parser.add_argument("--texts", type=int, default=2, help="held-out texts per length (accuracy is their mean and min)")
    parser.add_argument("--steps", type=int, default=None, help="key-only steps (default: the config's key_steps)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-control", dest="control", action="store_false", help="skip re-learning a library text's key (the optimiser check)")
    return parser.parse_args()


if __name__ == "__main__":
    main()
