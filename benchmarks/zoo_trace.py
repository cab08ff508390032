"""A model zoo under a memory budget: sage vs lru vs always-best on one request trace.

Builds (once, cached under --work) a zoo of 7 real Atlas bundles: two specialist libraries of
about 1M parameters (texts 0-1 and texts 2-3) exported at several precisions, and a small, weaker
generalist over texts 0-5 (the only model for texts 4-5). Every model's resident cost is measured
first (process RSS delta after load, warm-up runs and a few trace-shaped requests); the budget is
twice the median measured cost: two typical models fit. A trace with shifting locality (phases of 60-120
requests over a working set of one or two texts) is replayed through a fresh Zoo per policy; each
answer's quality is its char accuracy against the true text, reported back as feedback. Resident
memory (RSS above the zoo's baseline) is sampled every 5 ms and after every load and unload.

Prints, side by side: hit rate, swaps per selection, mean quality (and its share of
always-best's), p50/p99 latency, peak sampled memory against the budget, and what remains after
unloading everything; writes resident bytes over time as a PNG and prints its path.

    python benchmarks/zoo_trace.py [--work DIR] [--requests 900] [--seed 0] [--plot PNG]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import time
from pathlib import Path

import numpy as np

from _bundles import has_bundle
from _report import MIB

TEXT_CHARS = 300
WINDOW = 48
SPECIALIST = {"hidden": 256, "block_hidden": 2048, "steps": 400}  # ~1M parameters: weights, not runtime overhead, dominate
LIBRARIES = {  # name -> (text indices, config overrides, precisions)
    "a": ((0, 1), SPECIALIST, ("fp32", "fp16", "int8", "int4")),
    "b": ((2, 3), SPECIALIST, ("fp32", "int8")),
    "gen": ((0, 1, 2, 3, 4, 5), {"hidden": 64, "key_dim": 8, "steps": 200}, ("fp32",)),
}
POLICIES = ("sage", "lru", "always-best")


# ---- the zoo: trained and exported once, cached by recipe ----


def texts_used() -> dict[str, str]:
    from geofractal_edge.models.atlas.data import default_texts

    return {name: text[:TEXT_CHARS] for name, text in default_texts().items()}


def build_zoo(work: Path, *, libraries: dict = LIBRARIES, train=None) -> Path:
    """Train each library (cached by its own recipe) and export the bundles into work/zoo-<recipe>/.

    `libraries`: name -> (text indices, config overrides, precisions); `train(path, texts, overrides)`
    writes a checkpoint (default: `_train`, the Atlas library trainer)."""
    train = train or _train
    texts = texts_used()
    names = list(texts)
    recipes = {lib: _digest({"chars": TEXT_CHARS, "texts": {names[i]: texts[names[i]] for i in idx}, "config": cfg}) for lib, (idx, cfg, _) in libraries.items()}
    zoo = Path(work) / f"zoo-{_digest({'libraries': libraries, 'recipes': recipes})}"
    for lib, (indices, overrides, precisions) in libraries.items():
        if all(has_bundle(zoo / f"{lib}-{p}") for p in precisions):
            continue
        checkpoint = train(Path(work) / "checkpoints" / f"{lib}-{recipes[lib]}.safetensors", {names[i]: texts[names[i]] for i in indices}, overrides)
        for precision in precisions:
            out = zoo / f"{lib}-{precision}"
            if not has_bundle(out):
                _export(checkpoint, precision, out)
    return zoo


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _train(path: Path, texts: dict[str, str], overrides: dict) -> Path:
    if path.is_file():
        return path
    from geofractal_edge.models.atlas.checkpoint import save_checkpoint
    from geofractal_edge.models.atlas.config import AtlasConfig
    from geofractal_edge.models.atlas.data import build_vocab
    from geofractal_edge.models.atlas.train import train_library

    config = dataclasses.replace(AtlasConfig.tiny(build_vocab(texts.values())), **overrides)
    started = time.perf_counter()
    library, report = train_library(texts, config=config, seed=0)
    accuracy = ", ".join(f"{k} {100 * v:.1f}%" for k, v in report["accuracy"].items())
    print(f"trained {path.stem} in {time.perf_counter() - started:.0f} s: {accuracy}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, library, texts)
    return path


def _export(checkpoint: Path, precision: str, out: Path) -> None:
    from geofractal_edge.pipeline import export_bundle

    export_bundle(family="atlas", target="host-cpu", precision=precision, model=checkpoint, out=out, overwrite=True)
    print(f"exported {out.name}", flush=True)


# ---- measuring: calibration, trace, replay ----


def calibrate(zoo_path: Path, x: np.ndarray) -> list[dict]:
    """Load every model once in an unbounded zoo and serve it a few trace-shaped requests: measured
    cost (load + the memory onnxruntime adds per input shape) next to the estimate, and what unload gives back."""
    from geofractal_edge.runtimes.zoo import Zoo

    zoo = Zoo(zoo_path, budget_bytes=1 << 40)
    rows = []
    for model in [m["id"] for m in zoo.status()["models"]]:
        zoo.load(model)
        for start in (0, 100, 200):
            zoo.infer({"x": x[start : start + WINDOW]}, key=zoo.describe(model)["keys"][0], model=model)
        loaded = zoo.describe(model)
        rows.append({**loaded, **{k: v for k, v in zoo.unload(model).items() if k == "freed_bytes"}})
    zoo.close()
    return rows


def pick_working(rng: random.Random, groups: dict[str, list[str]], *, weights: list[int]) -> list[str]:
    """The texts of one phase: one or two from group a or b or gen-only, or one from each of a and b ("mixed")."""
    kind = rng.choices(["a", "b", "mixed", "gen-only"], weights=weights)[0]
    if kind == "mixed":
        return [rng.choice(groups["a"]), rng.choice(groups["b"])]
    return rng.sample(groups[kind], k=rng.choice([1, 2]))


def make_trace(n: int, seed: int) -> list[tuple[str, int]]:
    """Phases of 60-120 requests; each phase draws from one or two texts (same half or mixed)."""
    names = list(texts_used())
    halves = {"a": names[0:2], "b": names[2:4], "gen-only": names[4:6]}
    rng = random.Random(seed)
    trace: list[tuple[str, int]] = []
    while len(trace) < n:
        working = pick_working(rng, halves, weights=[3, 3, 2, 1])
        for _ in range(rng.randint(60, 120)):
            trace.append((rng.choice(working), rng.randrange(0, TEXT_CHARS - WINDOW)))
    return trace[:n]


def serve_trace(zoo, sampler, trace: list[tuple[str, int]], x: np.ndarray, texts: dict[str, str]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Each request through the zoo, its char accuracy fed back as quality: (quality, hit, answers per model)."""
    quality, hits = np.zeros(len(trace)), np.zeros(len(trace), dtype=bool)
    chosen: dict[str, int] = {}
    for i, (context, start) in enumerate(trace):
        answer = zoo.infer({"x": x[start : start + WINDOW]}, key=context)
        truth = texts[context][start : start + WINDOW]
        quality[i] = sum(a == b for a, b in zip(answer.decoded, truth)) / WINDOW
        hits[i] = answer.hit
        zoo.feedback(answer.request_id, float(quality[i]))
        chosen[answer.model] = chosen.get(answer.model, 0) + 1
        if answer.swapped:
            sampler.mark()
    return quality, hits, chosen


def replay(zoo_path: Path, policy: str, budget: int, trace: list[tuple[str, int]], x: np.ndarray, texts: dict[str, str]) -> dict:
    """One fresh zoo per policy; per request: quality (char accuracy, fed back) and whether it was a hit; resident
    memory sampled throughout, at the end and after unloading everything; what the zoo did not account for."""
    from geofractal_edge.runtimes.zoo import Zoo
    from geofractal_edge.runtimes.zoo.memory import Sampler

    holder = {}
    sampler = Sampler(lambda: holder["zoo"].measured_bytes(), interval_s=0.005)  # allocated before the zoo's baseline
    zoo = holder["zoo"] = Zoo(zoo_path, budget_bytes=budget, policy=policy)
    with sampler:
        quality, hits, chosen = serve_trace(zoo, sampler, trace, x, texts)
        loaded = zoo.measured_bytes()
        zoo.unload_all()
        sampler.mark()
        after = zoo.measured_bytes()
    times, values = sampler.series()
    timeline = list(zoo.metrics.timeline)  # (seconds, accounted, measured) after every load and unload
    return {
        "policy": policy, **zoo.metrics.summary(), "quality": float(quality.mean()), "quality_per_request": quality, "hit_per_request": hits,
        "peak_bytes": int(values.max()), "loaded_bytes": loaded, "after_unload_bytes": after, "times": times, "values": values, "chosen": chosen,
        "accounted": timeline, "unaccounted_bytes": max((measured - accounted for _, accounted, measured in timeline), default=0),
    }


# ---- reporting ----


def print_table(rows: list[dict], budget: int) -> None:
    best = next(r for r in rows if r["policy"] == "always-best")["quality"]
    head = f"{'policy':<12} {'hit rate':>9} {'swaps/sel':>10} {'quality':>8} {'vs best':>8} {'p50 ms':>7} {'p99 ms':>7} {'peak MiB':>9} {'peak/budget':>12} {'end MiB':>8} {'after unload':>13}"
    print(head)
    for r in rows:
        print(
            f"{r['policy']:<12} {100 * r['hit_rate']:>8.1f}% {r['swaps_per_selection']:>10.3f} {100 * r['quality']:>7.2f}% {100 * r['quality'] / best:>7.1f}% "
            f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['peak_bytes'] / MIB:>9.2f} {r['peak_bytes'] / budget:>11.1%} {r['loaded_bytes'] / MIB:>8.2f} {r['after_unload_bytes'] / MIB:>12.2f}"
        )
    for r in rows:
        print(f"  {r['policy']}: served by " + ", ".join(f"{m} {n}" for m, n in sorted(r["chosen"].items(), key=lambda kv: -kv[1])))


def verdicts(rows: list[dict], budget: int, calibration: list[dict]) -> bool:
    by = {r["policy"]: r for r in rows}
    sage, best = by["sage"], by["always-best"]
    checks = [
        (f"sage hit rate {100 * sage['hit_rate']:.1f}% >= 80%", sage["hit_rate"] >= 0.8),
        (f"sage swaps/selection {sage['swaps_per_selection']:.3f} <= 0.2", sage["swaps_per_selection"] <= 0.2),
        (f"sage quality {100 * sage['quality'] / best['quality']:.1f}% of always-best >= 95%", sage["quality"] >= 0.95 * best["quality"]),
    ]
    for r in rows:
        checks.append((f"{r['policy']}: peak sampled memory {r['peak_bytes'] / MIB:.2f} MiB <= 110% of budget {budget / MIB:.2f} MiB", r["peak_bytes"] <= 1.1 * budget))
        checks.append((f"{r['policy']}: after unload {r['after_unload_bytes'] / MIB:.2f} MiB < 25% of what was loaded at the end ({r['loaded_bytes'] / MIB:.2f} MiB)",
                       r["after_unload_bytes"] < 0.25 * max(r["loaded_bytes"], 1)))
    for text, passed in checks:
        print(f"{'PASSED' if passed else 'FAILED'} {text}")
    return all(passed for _, passed in checks)


def plot(rows: list[dict], budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 2.6 * len(rows)), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], rows):
        ax.plot(r["times"], r["values"] / MIB, lw=0.8, color="#2a6fb0", label="measured (RSS above baseline)")
        if r["accounted"]:
            t, accounted, _ = zip(*r["accounted"])
            ax.step(np.asarray(t) - t[0] + r["times"][0], np.asarray(accounted) / MIB, where="post", lw=0.8, color="#d08020", label="accounted by the zoo")
        ax.axhline(budget / MIB, color="#c33", lw=1.0, label="budget")
        ax.axhline(1.1 * budget / MIB, color="#c33", lw=0.8, ls="--", label="budget + 10%")
        ax.set_ylabel(f"{r['policy']}\nMiB")
        ax.set_title(f"{r['policy']}: hit rate {100 * r['hit_rate']:.1f}%, swaps/selection {r['swaps_per_selection']:.3f}, quality {100 * r['quality']:.1f}%", fontsize=9)
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds into the replay")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _parse() -> argparse.Namespace:
    cache = Path(os.environ.get("GFEDGE_CACHE") or Path.home() / ".cache" / "geofractal_edge")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=cache / "zoo-bench", help="where the zoo is built and cached")
    parser.add_argument("--requests", type=int, default=900)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=None, help="PNG path (default: WORK/zoo_resident_bytes.png)")
    parser.add_argument("--build-only", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = _parse()
    import torch  # host side: training and export only; the zoo itself never imports it

    torch.set_num_threads(1)  # the 2-core hosts this runs on are shared; more threads only contend
    zoo_path = build_zoo(args.work)
    print(f"zoo: {zoo_path}")
    if args.build_only:
        return
    from geofractal_edge.artifacts import open_bundle

    x = open_bundle(zoo_path / "a-fp32").golden_cases()[0].inputs["x"]  # positions of a 300-character text
    calibration = calibrate(zoo_path, x)
    print(f"{'model':<10} {'estimate MiB':>13} {'measured MiB':>13} {'freed MiB':>10} {'load s':>7} {'trust prior':>12}")
    for row in calibration:
        print(f"{row['id']:<10} {row['estimate_bytes'] / MIB:>13.2f} {row['measured_bytes'] / MIB:>13.2f} {row['freed_bytes'] / MIB:>10.2f} {row['load_seconds']:>7.3f} {row['trust']['mean']:>12.3f}")
    costs = {r["id"]: r["measured_bytes"] for r in calibration}
    budget = int(2 * float(np.median(list(costs.values()))))
    pairs = [(a, b) for i, a in enumerate(costs) for b in list(costs)[i + 1 :] if costs[a] + costs[b] <= budget]
    too_big = [m for m, c in costs.items() if c > budget]
    print(f"budget {budget / MIB:.2f} MiB = 2 x the median measured cost: {len(pairs)} of {len(costs) * (len(costs) - 1) // 2} pairs fit together"
          + (f"; {', '.join(too_big)} alone does not fit" if too_big else ""))
    texts = texts_used()
    trace = make_trace(args.requests, args.seed)
    rows = []
    for policy in POLICIES:
        started = time.perf_counter()
        rows.append(replay(zoo_path, policy, budget, trace, x, texts))
        print(f"replayed {len(trace)} requests with {policy} in {time.perf_counter() - started:.1f} s", flush=True)
    print()
    print_table(rows, budget)
    path = args.plot or args.work / "zoo_resident_bytes.png"
    plot(rows, budget, path)
    print(f"resident bytes over time: {path}")
    passed = verdicts(rows, budget, calibration)
    print("PASSED" if passed else "FAILED", "zoo trace acceptance")


if __name__ == "__main__":
    main()
