"""Real text for the TriX LM: CPython's documentation topics, split by position, and fixed-context batches.

The corpus is `pydoc_data.topics.topics` (ships with every Python, so nothing is downloaded): the
topics in sorted name order joined by a blank line. The held-out split is the LAST fraction of that
string, a contiguous piece of text the model never trains on (not a random sample of characters,
which would leak its neighbours). Different Python releases ship slightly different topic texts, so
the exact characters depend on the interpreter.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geofractal_edge.errors import GfedgeError


def corpus() -> str:
    """All pydoc topics, sorted by name, joined by "\\n\\n" (about 465k characters on CPython 3.12)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def split(text: str, held_out_fraction: float) -> tuple[str, str]:
    """(train, held_out): the held-out part is the last `held_out_fraction` of `text`."""
    cut = int(round(len(text) * (1.0 - held_out_fraction)))
    if cut < 2 or len(text) - cut < 2:
        raise GfedgeError(f"a {len(text)}-character text cannot be split at fraction {held_out_fraction}", "use a longer text or another fraction")
    return text[:cut], text[cut:]


def check_sizes(text: str, *, context: int, held_out_fraction: float) -> None:
    """Refuse, before any training, a text whose train or held-out part has too few characters for `context`.

    Both parts need `context + 1` characters (one window and its next character); the one-line error
    names the largest context and the smallest held-out fraction that would fit.
    """
    train, held = split(text, held_out_fraction)
    shortest = min(len(train), len(held))
    if shortest >= context + 1:
        return
    part = "held-out" if len(held) <= len(train) else "training"
    cuts = ((f / 100, int(round(len(text) * (1 - f / 100)))) for f in range(1, 50))  # the cut `split` makes at each hundredth
    fits = (f for f, cut in cuts if min(cut, len(text) - cut) >= context + 1)
    fraction = next(fits, None) if part == "held-out" else None
    fixes = [f"--context {shortest - 1}" if shortest > 1 else None, f"--held-out {fraction:g}" if fraction else None, "a longer text"]
    raise GfedgeError(f"the {part} part of this {len(text):,}-character text has {shortest:,} characters, too few for a context of {context} (it needs {context + 1})",
                      "pass " + ", or ".join(f for f in fixes if f))


def text_sha256(text: str) -> str:
    """sha256 of the text's UTF-8 bytes: what a checkpoint records of the text it was trained on."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def held_out_head(held: str, *, context: int, windows: int, max_bytes: int) -> str:
    """The first `windows` context windows of `held` (plus their next character), cut to at most `max_bytes` UTF-8 bytes.

    What a checkpoint stores for export's golden cases and calibration; a cut drops whole windows, but
    one window (`context + 1` characters) is always kept, whatever its size.
    """
    count = max(1, min(windows, (len(held) - 1) // context))
    while count > 1 and len(held[: count * context + 1].encode("utf-8")) > max_bytes:
        count -= 1
    return held[: count * context + 1]


def check_in_vocab(text: str, vocab: str, *, what: str) -> None:
    """Refuse, in one line, a text (`what` names it) with characters the model cannot encode."""
    missing = sorted(set(text) - set(vocab))
    if missing:
        raise GfedgeError(f"{what} has characters outside the model's vocabulary: {''.join(missing)!r}",
                          "pass a text made only of characters the model was trained on")


def build_vocab(text: str) -> str:
    """Sorted unique characters; a character's index is its token id. Built from the whole corpus so held-out text encodes."""
    return "".join(sorted(set(text)))


def encode(text: str, vocab: str) -> Tensor:
    """Token ids [len(text)] int64; characters outside `vocab` are refused, not silently dropped."""
    index = {char: i for i, char in enumerate(vocab)}
    missing = sorted(set(text) - index.keys())
    if missing:
        raise GfedgeError(f"text has characters outside the model's vocabulary: {''.join(missing)!r}", "train a model whose vocabulary includes them")
    return torch.tensor([index[char] for char in text], dtype=torch.long)


def decode(ids, vocab: str) -> str:
    return "".join(vocab[int(i)] for i in ids)


def random_batch(ids: Tensor, *, batch_size: int, context: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(inputs [B, context], targets [B, context]): windows at random offsets, targets shifted by one."""
    if len(ids) < context + 1:
        raise GfedgeError(f"{len(ids)} tokens are too few for a context of {context}", "use a shorter context or more text")
    start = torch.randint(0, len(ids) - context, (batch_size,), generator=generator)
    window = start[:, None] + torch.arange(context + 1)[None, :]  # [B, context + 1]
    chunk = ids[window]
    return chunk[:, :-1], chunk[:, 1:]


def eval_windows(ids: Tensor, *, context: int) -> tuple[Tensor, Tensor]:
    """Non-overlapping windows covering `ids` (a ragged tail is dropped): (inputs [W, context], targets [W, context])."""
    n = (len(ids) - 1) // context
    if n < 1:
        raise GfedgeError(f"{len(ids)} held-out tokens are too few for a context of {context}", "use a shorter context or a larger held-out fraction")
    inputs = ids[: n * context].view(n, context)
    targets = ids[1 : n * context + 1].view(n, context)
    return inputs, targets
