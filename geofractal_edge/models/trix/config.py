"""Hyper-parameters of a TriX character LM: architecture, routing and training schedule.

One frozen dataclass holds everything needed to rebuild a model and to reproduce its training, so
that a checkpoint's JSON metadata is the whole recipe. The vocabulary is a plain string: the index of
a character in it is its token id.

The dense baseline is built from the same config: its FFN hidden width is `d_hidden`, one tile's,
so that both models have the same active FFN parameters per token.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.checkpoint_io import known_fields

ROUTINGS = ("flat", "hierarchical")


@dataclass(frozen=True)
class TrixConfig:
    """Everything that defines a TriX LM and how it is trained.

    Routing scores are ``x . signature`` (no router parameters). During training the tiles are mixed
    by ``softmax(score / (sqrt(d_model) * temperature))``; the temperature decays geometrically from
    `temperature_start` to `temperature_end` so that the end of training is close to the hard argmax
    used at inference. With ``routing="hierarchical"`` the signatures are k-means clustered into
    `n_clusters` groups (0: ``round(sqrt(n_tiles))``), rebuilt every `recluster_every` steps, and a
    cluster holds at most ``cluster_capacity`` tiles so that the second routing stage has a fixed width.
    """

    vocab: str
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 2
    context: int = 64
    # 4 tiles: at this training budget 8 did worse (held-out 2.167 vs 2.128 bits/char at 1000 steps:
    # each tile sees half the tokens), and soft training costs n_tiles x the FFN.
    n_tiles: int = 4
    d_hidden: int = 128  # per tile; the dense baseline's FFN width
    routing: str = "flat"  # "flat" or "hierarchical"
    n_clusters: int = 0  # hierarchical only; 0 means round(sqrt(n_tiles))
    cluster_capacity_factor: float = 1.25  # a cluster holds at most ceil(factor * n_tiles / n_clusters) tiles
    # Straight-through gradient from the routing scores into the up weights. Off: on the pydoc LM it
    # cost ~3% held-out bits/char (2.199 vs 2.128 at 1000 steps); signatures still follow the weights.
    signature_grad: bool = False
    # training
    steps: int = 1500
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    temperature_start: float = 1.0
    temperature_end: float = 0.05
    balance_weight: float = 0.01
    # Routes that survive quantization: a hinge pushes each token's top-1 minus top-2 routing score
    # (in units of sqrt(d_model)) above `route_margin`, weighted by `route_margin_weight` (0: off).
    route_margin: float = 0.1
    route_margin_weight: float = 0.1  # 0.1: same held-out bpc, fewer int8 route flips (benchmarks/RESULTS.md)
    recluster_every: int = 100
    held_out_fraction: float = 0.1

    def __post_init__(self) -> None:
        if len(self.vocab) < 2 or len(set(self.vocab)) != len(self.vocab):
            raise GfedgeError("a TriX vocabulary needs at least 2 distinct characters and no duplicates", "build it with geofractal_edge.models.trix.data.build_vocab(text)")
        if min(self.d_model, self.n_heads, self.n_layers, self.context, self.n_tiles, self.d_hidden) < 1:
            raise GfedgeError("d_model, n_heads, n_layers, context, n_tiles and d_hidden must all be positive", "fix the TriX config")
        if self.d_model % self.n_heads:
            raise GfedgeError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}", "pick n_heads that divides d_model")
        if self.routing not in ROUTINGS:
            raise GfedgeError(f"unknown TriX routing '{self.routing}'", f"use one of: {', '.join(ROUTINGS)}")
        if self.n_clusters < 0 or self.n_clusters > self.n_tiles:
            raise GfedgeError(f"n_clusters must be in [0, n_tiles={self.n_tiles}], got {self.n_clusters}", "use 0 for round(sqrt(n_tiles))")
        if self.cluster_capacity_factor < 1.0:
            raise GfedgeError(f"cluster_capacity_factor must be >= 1, got {self.cluster_capacity_factor}", "pick e.g. 1.25")
        if not 0.0 < self.temperature_end <= self.temperature_start:
            raise GfedgeError("temperatures must satisfy 0 < temperature_end <= temperature_start", "fix the TriX config")
        if not 0.0 < self.held_out_fraction < 1.0:
            raise GfedgeError(f"held_out_fraction must be in (0, 1), got {self.held_out_fraction}", "pick e.g. 0.1")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def clusters(self) -> int:
        """The number of clusters hierarchical routing uses (resolves the 0 default)."""
        return self.n_clusters or default_clusters(self.n_tiles)

    @property
    def cluster_capacity(self) -> int:
        """The most tiles a cluster may hold: the fixed width of the second routing stage."""
        return cluster_capacity(self.n_tiles, self.clusters, self.cluster_capacity_factor)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrixConfig:
        """Rebuild from `to_dict()` output; unknown fields are refused so that typos surface."""
        known_fields(cls, data, what="TriX")
        return cls(**data)

    @classmethod
    def default(cls, vocab: str) -> TrixConfig:
        """The configuration of the TriX-vs-dense benchmark on the pydoc corpus (a few minutes on 2 cores)."""
        return cls(vocab=vocab)

    @classmethod
    def tiny(cls, vocab: str) -> TrixConfig:
        """A small configuration for tests: builds and runs in milliseconds, trains in seconds."""
        return cls(vocab=vocab, d_model=32, n_heads=2, n_layers=2, context=16, n_tiles=4, d_hidden=32, steps=20, batch_size=8, recluster_every=10)


def default_clusters(n_tiles: int) -> int:
    """round(sqrt(n)) clusters: balances the n_clusters + tiles-per-cluster dot products of 2-level routing."""
    return max(1, round(math.sqrt(n_tiles)))


def cluster_capacity(n_tiles: int, n_clusters: int, factor: float) -> int:
    """ceil(factor * n / C), at least 1 and at most n."""
    return min(n_tiles, max(1, math.ceil(factor * n_tiles / n_clusters)))
