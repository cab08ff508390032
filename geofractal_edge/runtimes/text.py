"""Text in and out of character models, torch-free: Atlas recall and TriX generation.

Atlas stores a text as a function of its coordinates: character i of n sits at i / (n - 1) (float32,
one correctly rounded division, as in training). `recall` evaluates every coordinate, in chunks of
at most the graph's declared maximum, and decodes the argmax through the manifest's vocabulary; the
function is pointwise, so chunking changes nothing.

TriX is a causal LM over a fixed window of `context` tokens. `generate` writes the prompt at the
start of the window and pads the rest: with causal attention and per-token routing the logits at the
last prompt position depend only on the prompt, so padding changes nothing. Once the text is longer
than the window, the window slides over its last `context` tokens.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from geofractal_edge.errors import InputError


def coordinates(n: int) -> np.ndarray:
    """Positions of n characters in [0, 1], exactly as training computed them."""
    if n < 1:
        raise InputError("a text needs at least one character", "pass --length 1 or more")
    if n == 1:
        return np.zeros(1, np.float32)
    return np.arange(n, dtype=np.float32) / np.float32(n - 1)


def recall(runner, *, length: int | None = None, key=None) -> str:
    """The text a key stores: `length` characters (default: the length recorded in the key)."""
    manifest = runner.manifest
    vocab, graph = manifest.task.vocab, manifest.graph
    coordinate_input = next((d for d in graph.data_inputs if d.role == "coordinates"), None)
    if vocab is None or coordinate_input is None:
        raise InputError(f"a {manifest.family} bundle does not store texts", "recall works on Atlas bundles; pass --input for others")
    if key is not None:
        runner.use_key(key)
    bound = runner.bound_key
    length = length or (bound.length if bound is not None else None)
    if length is None:
        raise InputError(f"key '{runner.active_key}' does not record its text's length", "pass --length N")
    chunk = graph.dim_ranges[coordinate_input.shape[0]].max
    x = coordinates(length)
    out = [runner.run({coordinate_input.name: x[i:i + chunk]})["logits"].argmax(-1) for i in range(0, length, chunk)]
    return "".join(vocab[i] for i in np.concatenate(out))


def generate(runner, prompt: str, *, max_new: int = 200, temperature: float = 0.8, top_k: int = 0, seed: int = 0) -> Iterator[str]:
    """Characters continuing `prompt`, one at a time (greedy when temperature is 0)."""
    manifest = runner.manifest
    vocab = manifest.task.vocab
    tokens_input = next((d for d in manifest.graph.data_inputs if d.role == "tokens"), None)
    if vocab is None or tokens_input is None or not isinstance(tokens_input.shape[1], int):
        raise InputError(f"a {manifest.family} bundle is not a character LM", "generate works on TriX LM bundles")
    if temperature < 0 or top_k < 0 or max_new < 0:
        raise InputError("temperature, top-k and the length must not be negative", "e.g. --temperature 0.8 --top-k 20")
    index = {c: i for i, c in enumerate(vocab)}
    unknown = sorted(set(prompt) - set(index))
    if unknown:
        raise InputError(f"the prompt has characters the model never saw: {''.join(unknown)[:20]!r}", f"use characters of its vocabulary ({len(vocab)} of them)")
    if not prompt:
        raise InputError("the prompt is empty", 'pass at least one character, e.g. --prompt "def "')
    context = tokens_input.shape[1]
    rng = np.random.default_rng(seed)
    text = [index[c] for c in prompt]
    for _ in range(max_new):
        window = text[-context:]
        tokens = np.zeros((1, context), np.int64)
        tokens[0, :len(window)] = window
        logits = runner.run({tokens_input.name: tokens})["logits"][0, len(window) - 1].astype(np.float64)
        nxt = _sample(logits, temperature=temperature, top_k=top_k, rng=rng)
        text.append(nxt)
        yield vocab[nxt]


def _sample(logits: np.ndarray, *, temperature: float, top_k: int, rng: np.random.Generator) -> int:
    if temperature == 0:
        return int(logits.argmax())
    if top_k:
        cut = np.sort(logits)[-min(top_k, logits.size)]
        logits = np.where(logits >= cut, logits, -np.inf)
    p = np.exp((logits - logits.max()) / temperature)
    return int(rng.choice(logits.size, p=p / p.sum()))


def recall_report(runner, text: str) -> dict:
    """The recalled text against the bundle's golden labels for the bound key, and what export measured."""
    key = runner.active_key
    report: dict = {"key": key, "text": text, "characters": len(text)}
    vocab = runner.manifest.task.vocab
    case = next((c for c in runner.bundle.golden_cases() if c.key == key and "chars" in c.labels), None)
    if case is not None and len(case.labels["chars"]) == len(text):
        truth = "".join(vocab[i] for i in case.labels["chars"])
        report["char_accuracy"] = 100.0 * sum(a == b for a, b in zip(text, truth)) / len(text)
    parity = runner.manifest.parity
    measured = next((c.get("char_accuracy_runtime") for c in (parity.cases if parity else ()) if c.get("key") == key), None)
    if measured is not None:
        report["char_accuracy_at_export"] = measured
    return report
