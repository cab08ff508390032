"""The Atlas core (position + key -> character logits) and the library (a core plus one key per text).

The core is written for `torch.onnx.export`: frequencies are a buffer, features are
``x[:, None] * freqs[None, :]`` followed by sin/cos, the T updates are an unrolled Python loop over
one shared block, and the only branch (`self.training`) is fixed at export time.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.atlas.config import AtlasConfig


class AtlasCore(nn.Module):
    """logits[i] = out(h_T), h_{t+1} = (1 - alpha) h_t + alpha tanh(block(h_t)), h_0 = in(features(x), key)."""

    def __init__(self, config: AtlasConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("freqs", torch.tensor(config.frequencies, dtype=torch.float32))
        # The key's projection is kept apart from the features' so that it is computed once per key,
        # not once per position; together they are exactly one Linear over concat(features, key).
        self.feature_proj = nn.Linear(config.n_features, config.hidden)
        self.key_proj = nn.Linear(config.key_dim, config.hidden, bias=False)
        self.block = _make_block(config)
        self.out = nn.Linear(config.hidden, config.vocab_size)

    def features(self, x: Tensor) -> Tensor:
        """[n] -> [n, 1 + 2K]: x, sin(f_k x), cos(f_k x)."""
        phase = x[:, None] * self.freqs[None, :]  # [n, K]
        return torch.cat([x[:, None], torch.sin(phase), torch.cos(phase)], dim=1)

    def forward(self, x: Tensor, key: Tensor) -> Tensor:
        """x: [n] float32 in [0, 1]; key: [key_dim] -> logits [n, V]."""
        h = self.feature_proj(self.features(x)) + self.key_proj(key)[None, :]  # [n, H]
        return self._run(h)

    def forward_batch(self, x: Tensor, keys: Tensor, *, sparse_update_prob: float | None = None) -> Tensor:
        """x: [n]; keys: [n, key_dim] (one key per position, for mixed-text mini-batches) -> [n, V].

        `sparse_update_prob` overrides the config's for this call (the trainer turns it off for the
        last part of training); it has no effect in eval mode.
        """
        h = self.feature_proj(self.features(x)) + self.key_proj(keys)  # [n, H]
        return self._run(h, sparse_update_prob)

    def _run(self, h: Tensor, sparse_update_prob: float | None = None) -> Tensor:
        alpha = self.config.alpha
        skip = self.config.sparse_update_prob if sparse_update_prob is None else sparse_update_prob
        for _ in range(self.config.T):
            delta = alpha * (torch.tanh(self.block(h)) - h)  # [n, H]
            if self.training and skip > 0.0:
                # Stochastic depth per sample: each position skips this update with probability `skip`,
                # so the core cannot lean on any single iteration and stays stable when all T run.
                keep = (torch.rand(h.shape[0], 1, device=h.device) >= skip).to(h.dtype)  # [n, 1]
                delta = delta * keep
            h = h + delta
        return self.out(h)


class AtlasLibrary(nn.Module):
    """One shared core and one trainable key per text; `names[i]` owns `keys[i]`."""

    def __init__(self, config: AtlasConfig, names: list[str]) -> None:
        super().__init__()
        if len(set(names)) != len(names):
            raise GfedgeError("two texts share a name", "give every text a unique name")
        self.core = AtlasCore(config)
        self.names = list(names)
        # Keys start as distinct random points (std `key_init_std`) so texts are told apart from step 0.
        self.keys = nn.Parameter(torch.randn(len(names), config.key_dim) * config.key_init_std)  # [n_texts, key_dim]

    @property
    def config(self) -> AtlasConfig:
        return self.core.config

    def key(self, name: str) -> Tensor:
        """The key [key_dim] of text `name`."""
        if name not in self.names:
            raise GfedgeError(f"no key named '{name}' in this library", f"known keys: {', '.join(self.names)}")
        return self.keys[self.names.index(name)]

    def forward(self, x: Tensor, key_index: Tensor, *, sparse_update_prob: float | None = None) -> Tensor:
        """x: [n]; key_index: [n] long, the text each position belongs to -> logits [n, V].

        Keys are gathered with a one-hot matmul, not `keys[key_index]`: the backward of indexing
        accumulates with a thread-order-dependent sum on CPU, which made training with 2 threads
        differ bit-wise from run to run.
        """
        one_hot = nn.functional.one_hot(key_index, len(self.names)).to(self.keys.dtype)  # [n, n_texts]
        return self.core.forward_batch(x, one_hot @ self.keys, sparse_update_prob=sparse_update_prob)  # keys: [n, key_dim]


def _make_block(config: AtlasConfig) -> nn.Module:
    """The shared update: a Linear, or a 2-layer MLP when `block_hidden` > 0."""
    if config.block_hidden <= 0:
        return nn.Linear(config.hidden, config.hidden)
    return nn.Sequential(nn.Linear(config.hidden, config.block_hidden), nn.GELU(), nn.Linear(config.block_hidden, config.hidden))
