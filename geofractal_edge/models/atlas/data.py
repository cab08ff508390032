"""Real English texts for Atlas, and the character encoding.

Texts come from CPython's own documentation (`pydoc_data.topics.topics`), which ships with every
Python, so the default library needs no download. The choice is deterministic for a given Python
version: topic names in sorted order, keeping those with at least `min_chars` characters, the first
`n` of them, each cut to its first `max_chars` characters. (Different Python releases ship slightly
different topic texts, so the exact characters depend on the interpreter.)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from geofractal_edge.errors import GfedgeError


def _topics() -> dict[str, str]:
    from pydoc_data.topics import topics

    return dict(topics)


def default_texts(n: int = 8, min_chars: int = 2000, max_chars: int = 2400) -> dict[str, str]:
    """The first `n` pydoc topics (sorted by name) with >= `min_chars` characters, cut to `max_chars`."""
    topics = _topics()
    names = [name for name in sorted(topics) if len(topics[name]) >= min_chars][:n]
    if len(names) < n:
        raise GfedgeError(f"only {len(names)} pydoc topics have >= {min_chars} characters, {n} asked", "ask for fewer texts or shorter ones")
    return {name: topics[name][:max_chars] for name in names}


def held_out_texts(exclude: Iterable[str], vocab: str, *, n_chars: int) -> dict[str, str]:
    """Pydoc topics not in `exclude`, cut to `n_chars`, whose characters all lie in `vocab`.

    For key-only training against a frozen core (which can only emit its own vocabulary). Sorted by
    name; topics shorter than `n_chars` are skipped so every returned text has exactly `n_chars`.
    """
    excluded = set(exclude)
    allowed = set(vocab)
    cut = {name: text[:n_chars] for name, text in sorted(_topics().items()) if name not in excluded and len(text) >= n_chars}
    return {name: text for name, text in cut.items() if set(text) <= allowed}


def build_vocab(texts: Iterable[str]) -> str:
    """Sorted unique characters of all texts; a character's index is its token id."""
    return "".join(sorted(set("".join(texts))))


def encode(text: str, vocab: str) -> torch.Tensor:
    """Token ids [len(text)] (int64); characters outside `vocab` are refused, not silently dropped."""
    index = {char: i for i, char in enumerate(vocab)}
    missing = sorted(set(text) - index.keys())
    if missing:
        raise GfedgeError(f"text has characters outside the model's vocabulary: {''.join(missing)!r}", "remove them, or train a library whose texts include them")
    return torch.tensor([index[char] for char in text], dtype=torch.long)


def decode(ids: Iterable[int], vocab: str) -> str:
    return "".join(vocab[int(i)] for i in ids)


def coordinates(n: int) -> torch.Tensor:
    """Positions of n characters in [0, 1]: i / (n - 1) as float32 ([0.0] when n == 1)."""
    if n < 1:
        raise GfedgeError("a text needs at least one character", "pass a non-empty text")
    if n == 1:
        return torch.zeros(1, dtype=torch.float32)
    return torch.arange(n, dtype=torch.float32) / float(n - 1)  # exact ints, one correctly rounded division
