"""Our MiniLM encoder bundles against `optimum-cli export onnx` (and its dynamic int8) of the same model, on the same onnxruntime.

Every variant answers the same question, sentences in -> one L2-normalised sentence embedding each,
as sentence-transformers computes it (mean over unmasked tokens, then Normalize, as the model's
modules.json lists). Our bundle's graph does that itself; an optimum `feature-extraction` export
returns the token states, and the mean pooling and normalisation then run in numpy inside the timed
call (an export made with sentence-transformers installed returns `sentence_embedding` and gets no
numpy step). Token ids come from the model folder's own tokenizer, once, outside the timed call.

Timing: for each thread count, one worker process (no torch in it) loads every variant with the same
onnxruntime session settings (the host-cpu target's [runtime] table, intra-op threads forced) and
times them round-robin, run after run on the same input, so machine noise hits all alike. Reported:
p50 per variant and batch, and its ratio to the first variant. Accuracy: the cosine of each variant's
embedding to sentence-transformers' own (torch, float32) on held-out sentences, mean and minimum.

optimum is not needed here: pass the folders it wrote.

Usage: python benchmarks/minilm_vs_optimum.py --ours fp32=BUNDLE --ours int8=BUNDLE \
           --optimum fp32=OPT_FP32 --optimum int8=OPT_INT8 [--threads 1 2] [--batch 1 16] [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _report import MIB

EVAL_SKIP = 200  # sentences past the encoder bundle's golden cases (64) and int8 calibration (64..127)


def onnx_file(folder: Path) -> Path:
    """The model a bundle or optimum folder holds: model.onnx, else the one *.onnx in it."""
    if (folder / "model.onnx").is_file():
        return folder / "model.onnx"
    found = sorted(folder.glob("*.onnx"))
    if len(found) != 1:
        raise SystemExit(f"{folder}: expected model.onnx or exactly one .onnx file, found {[p.name for p in found]}")
    return found[0]


# ---- worker: onnxruntime only ------------------------------------------------------------------


def session(path: Path, threads: int):
    import onnxruntime as ort

    from geofractal_edge.backends.onnxruntime.loader import prepared_options
    from geofractal_edge.targets import get_target

    # host-cpu's settings for every variant alike; an arena each, as when these figures were recorded
    settings = get_target("host-cpu").runtime.but(intra_op_threads=threads, inter_op_threads=1, shared_arena=False)
    return ort.InferenceSession(str(path), prepared_options(settings, asked_by="target host-cpu"), providers=["CPUExecutionProvider"])


def embed(sess, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Sentence embeddings [B, E] from a session, pooling in numpy when the graph returns token states."""
    names = {i.name for i in sess.get_inputs()}
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        feeds["token_type_ids"] = np.zeros_like(ids)
    outputs = [o.name for o in sess.get_outputs()]
    pooled = "sentence_embedding" in outputs
    out = sess.run(["sentence_embedding" if pooled else outputs[0]], feeds)[0]
    if pooled:
        return out
    m = mask[..., None].astype(out.dtype)  # [B, L, 1]
    mean = (out * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)  # [B, E]
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def worker(spec: dict) -> dict:
    data = np.load(spec["inputs"])
    threads, runs = spec["threads"], spec["runs"]
    sessions = {name: session(Path(path), threads) for name, path in spec["variants"].items()}
    result: dict = {"threads": threads, "p50_us": {}, "embeddings": {}}
    for batch in spec["batches"]:
        cases = [(data[f"ids{batch}_{i}"], data[f"mask{batch}_{i}"]) for i in range(spec["cases"][str(batch)])]
        for sess in sessions.values():  # warm-up on every shape
            for ids, mask in cases:
                embed(sess, ids, mask)
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for run in range(runs):
            ids, mask = cases[run % len(cases)]
            for name, sess in sessions.items():
                start = time.perf_counter()
                embed(sess, ids, mask)
                times[name].append((time.perf_counter() - start) * 1e6)
        result["p50_us"][str(batch)] = {name: float(np.median(t)) for name, t in times.items()}
    ids, mask = data["eval_ids"], data["eval_mask"]
    for name, sess in sessions.items():
        result["embeddings"][name] = np.concatenate([embed(sess, ids[i:i + 16], mask[i:i + 16]) for i in range(0, len(ids), 16)]).tolist()
    return result


# ---- driver: tokenizer and torch reference -------------------------------------------------------


def prepare(path: Path, batches: list[int], n_eval: int) -> tuple[dict, np.ndarray]:
    """Token ids for timing and evaluation, written to `path`; and sentence-transformers' reference embeddings."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from geofractal_edge.models.collective.encoder import bundled_minilm, sentences

    folder = bundled_minilm()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    texts = sentences(n_eval + 64, skip=EVAL_SKIP)
    timing, held_out = texts[:64], texts[64:]

    def tokens(chunk):
        t = tokenizer(list(chunk), padding=True, truncation=True, max_length=256, return_tensors="np")
        return t["input_ids"].astype(np.int64), t["attention_mask"].astype(np.int64)

    arrays, cases = {}, {}
    for batch in batches:
        cases[str(batch)] = max(1, min(8, len(timing) // batch))
        for i in range(cases[str(batch)]):
            arrays[f"ids{batch}_{i}"], arrays[f"mask{batch}_{i}"] = tokens(timing[i * batch:(i + 1) * batch])
    # held-out sentences, padded per 16 like a batch-16 call (one array, sliced by 16 in the worker)
    chunks = [tokens(held_out[i:i + 16]) for i in range(0, len(held_out), 16)]
    width = max(c[0].shape[1] for c in chunks)
    pad = int(tokenizer.pad_token_id)
    arrays["eval_ids"] = np.concatenate([np.pad(c[0], ((0, 0), (0, width - c[0].shape[1])), constant_values=pad) for c in chunks])
    arrays["eval_mask"] = np.concatenate([np.pad(c[1], ((0, 0), (0, width - c[1].shape[1]))) for c in chunks])
    np.savez(path, **arrays)
    import torch

    torch.set_num_threads(1)
    reference = SentenceTransformer(str(folder), device="cpu").encode(held_out, convert_to_numpy=True, normalize_embeddings=True)
    return cases, reference.astype(np.float64)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def labelled(pairs: list[str], prefix: str) -> dict[str, Path]:
    out = {}
    for pair in pairs:
        label, _, folder = pair.partition("=")
        if not folder or not Path(folder).is_dir():
            raise SystemExit(f"--{prefix} {pair!r}: give LABEL=FOLDER with an existing folder")
        out[f"{prefix} {label}"] = onnx_file(Path(folder))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ours", action="append", default=[], help="LABEL=BUNDLE (repeat)")
    parser.add_argument("--optimum", action="append", default=[], help="LABEL=FOLDER written by optimum-cli (repeat)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--eval", type=int, default=64, help="held-out sentences for the cosine")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker.read_text())
        Path(spec["out"]).write_text(json.dumps(worker(spec)))
        return
    variants = {**labelled(args.ours, "ours"), **labelled(args.optimum, "optimum")}
    if not variants:
        raise SystemExit("nothing to compare: pass --ours LABEL=BUNDLE and --optimum LABEL=FOLDER")
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        cases, reference = prepare(Path(tmp, "inputs.npz"), args.batch, args.eval)
        results = []
        for threads in args.threads:
            spec = {"inputs": str(Path(tmp, "inputs.npz")), "threads": threads, "runs": args.runs, "batches": args.batch, "cases": cases,
                    "variants": {k: str(v) for k, v in variants.items()}, "out": str(Path(tmp, f"out{threads}.json"))}
            Path(tmp, "spec.json").write_text(json.dumps(spec))
            subprocess.run([sys.executable, __file__, "--worker", str(Path(tmp, "spec.json"))], check=True)
            results.append(json.loads(Path(spec["out"]).read_text()))
    report(variants, results, reference, args, load_start)


def report(variants: dict[str, Path], results: list[dict], reference: np.ndarray, args, load_start) -> None:
    import onnxruntime

    names = list(variants)
    print(f"onnxruntime {onnxruntime.__version__}, {os.cpu_count()} cores; {args.runs} timed runs per variant, batch and thread count, round-robin; "
          f"load average {load_start[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    cos = {n: cosines(results[0]["embeddings"][n], reference) for n in names}
    print(f"\n{'variant':<22} {'MiB':>7} {'cos mean':>9} {'cos min':>8}" + "".join(f" {'p50 ms t' + str(r['threads']) + ' b' + str(b):>15}" for r in results for b in args.batch))
    first = names[0]
    for n in names:
        cells = [f"{r['p50_us'][str(b)][n] / 1e3:>9.2f} x{r['p50_us'][str(b)][n] / r['p50_us'][str(b)][first]:.2f}" for r in results for b in args.batch]
        print(f"{n:<22} {variants[n].stat().st_size / MIB:>7.1f} {cos[n].mean():>9.5f} {cos[n].min():>8.5f}" + "".join(f" {c:>15}" for c in cells))
    print(f"(x: p50 against {first}; cosine against sentence-transformers in torch on {len(reference)} held-out sentences)")
    pairs = [(a, b) for a in names if a.startswith("ours ") for b in names if b.startswith("optimum ") and a.split()[1][:4] == b.split()[1][:4]]
    for a, b in pairs:
        ratios = ", ".join(f"t{r['threads']} b{bt} x{r['p50_us'][str(bt)][a] / r['p50_us'][str(bt)][b]:.2f}" for r in results for bt in args.batch)
        print(f"{a} / {b} p50: {ratios}")


if __name__ == "__main__":
    main()
