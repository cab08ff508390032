"""Text -> token ids on the device with the tokenizer an encoder bundle ships: no torch, no transformers.

The bundle's `tokenizer` section names a `tokenizers` JSON file (the same fast tokenizer transformers
wraps) and how to use it: truncate to `max_length` tokens, pad to the longest text with `pad_id`.
The attention mask is 1 on real tokens. Batches larger than the graph's declared maximum are cut
into several calls by `embed`.
"""

from __future__ import annotations

import numpy as np

from geofractal_edge.backends.lazy import require
from geofractal_edge.errors import BundleError, InputError


class TextTokenizer:
    def __init__(self, bundle) -> None:
        info = bundle.manifest.tokenizer
        if info is None:
            raise BundleError(f"bundle {bundle.path.name} ships no tokenizer", "pass token ids with --input, or re-export the encoder with this version")
        tokenizers = require("tokenizers")
        try:
            self._tok = tokenizers.Tokenizer.from_file(str(bundle.file(info.file)))
        except Exception as exc:  # the library raises its own untyped errors for a bad file
            raise BundleError(f"the bundle's tokenizer cannot be read ({str(exc)[:80]})", "re-export the encoder bundle") from exc
        self._tok.enable_truncation(max_length=info.max_length)
        self._tok.enable_padding(pad_id=info.pad_id, pad_token=info.pad_token)

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        if not texts or not all(isinstance(t, str) for t in texts):
            raise InputError("no text to encode", 'pass --text "..." (one or more)')
        encodings = self._tok.encode_batch(list(texts))
        return {"input_ids": np.array([e.ids for e in encodings], np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], np.int64)}


def embed(runner, texts: list[str], tokenizer: TextTokenizer | None = None) -> dict[str, np.ndarray]:
    """Run an encoder (or a chain) on raw texts, in batches no larger than the graph declares."""
    encoder = getattr(runner, "encoder", runner)  # a Chain tokenizes for its encoder
    tokenizer = tokenizer or TextTokenizer(encoder.bundle)
    first = encoder.manifest.graph.data_inputs[0]
    batch = encoder.manifest.graph.dim_ranges[first.shape[0]].max if isinstance(first.shape[0], str) else len(texts)
    parts = [runner.run(tokenizer(texts[i:i + batch])) for i in range(0, len(texts), batch)]
    return {name: np.concatenate([p[name] for p in parts], axis=_batch_axis(encoder, runner, name)) for name in parts[0]}


def _batch_axis(encoder, runner, name: str) -> int:
    """Outputs are batch-major except routed diagnostics, which lead with the layer axis."""
    for manifest in (encoder.manifest, getattr(getattr(runner, "collective", None), "manifest", None)):
        decl = next((d for d in (manifest.outputs if manifest else ()) if d.name == name), None)
        if decl is not None:
            return next((i for i, d in enumerate(decl.shape) if d == "batch"), 0)
    return 0
