"""Hyper-parameters of an Atlas model: architecture, frequency plan and training schedule.

One frozen dataclass holds everything needed to rebuild a core and to reproduce its training, so
that a checkpoint's JSON metadata is the whole recipe. The vocabulary is a plain string: the index
of a character in it is its token id.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.checkpoint_io import known_fields

DEFAULT_MAX_CHARS = 2400
DEFAULT_N_FREQS = 384


@dataclass(frozen=True)
class AtlasConfig:
    """Everything that defines an Atlas core and how it is trained.

    Frequencies are ``freq_base * freq_growth ** k`` for ``k = 1..n_freqs``. With a growth below 2
    there are several frequencies per octave, which gives the input layer a denser position code
    than a pure binary-like octave ladder; the top frequency must reach about ``pi * N`` for a text
    of N characters so that neighbouring characters get distinguishable features.
    """

    vocab: str
    key_dim: int = 64
    hidden: int = 256
    T: int = 4
    alpha: float = 0.5
    block_hidden: int = 0  # 0: the shared block is one Linear(hidden, hidden); >0: a 2-layer MLP
    freq_base: float = 1.0
    freq_growth: float = 1.0235  # ~30 per octave; default() sets it so the top is pi * max_chars
    n_freqs: int = DEFAULT_N_FREQS
    sparse_update_prob: float = 0.1  # chance to skip each of the T updates per sample, training only
    sparse_update_until: float = 0.5  # fraction of library-training steps with sparse updates on
    key_init_std: float = 1.0
    # library training
    steps: int = 1250
    batch_size: int = 2048
    lr: float = 1e-2
    weight_decay: float = 0.0
    # key-only training (frozen core)
    key_steps: int = 400
    key_lr: float = 1e-1

    def __post_init__(self) -> None:
        if len(self.vocab) < 2 or len(set(self.vocab)) != len(self.vocab):
            raise GfedgeError("an Atlas vocabulary needs at least 2 distinct characters and no duplicates", "build it with build_vocab(texts)")
        if not 0.0 <= self.sparse_update_prob < 1.0:
            raise GfedgeError(f"sparse_update_prob must be in [0, 1), got {self.sparse_update_prob}", "pick e.g. 0.1")
        if min(self.key_dim, self.hidden, self.T, self.n_freqs) < 1:
            raise GfedgeError("key_dim, hidden, T and n_freqs must all be positive", "fix the Atlas config")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def frequencies(self) -> list[float]:
        """The feature frequencies in radians per unit x, lowest first."""
        return [self.freq_base * self.freq_growth**k for k in range(1, self.n_freqs + 1)]

    @property
    def n_features(self) -> int:
        """Width of the position features: x itself plus a sin and a cos per frequency."""
        return 1 + 2 * self.n_freqs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AtlasConfig:
        """Rebuild from `to_dict()` output; unknown fields are refused so that typos surface."""
        known_fields(cls, data, what="Atlas")
        return cls(**data)

    @classmethod
    def default(cls, vocab: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> AtlasConfig:
        """The configuration used for the default 8-text library (<= 2400 characters per text).

        `max_chars` only moves the frequency ladder so that its top reaches pi * max_chars; longer
        texts than the default also need more steps (or a wider core) to be memorised exactly.
        """
        return cls(vocab=vocab, freq_growth=growth_for(max_chars, n_freqs=DEFAULT_N_FREQS))

    @classmethod
    def tiny(cls, vocab: str, *, max_chars: int = 300) -> AtlasConfig:
        """A small configuration for tests: two ~300-character texts to >= 99% in a few seconds."""
        n_freqs = 32
        return cls(
            vocab=vocab,
            key_dim=16,
            hidden=96,
            T=3,
            freq_growth=growth_for(max_chars, n_freqs=n_freqs),
            n_freqs=n_freqs,
            steps=300,
            batch_size=512,
            lr=1e-2,
            key_steps=200,
        )


def growth_for(max_chars: int, *, n_freqs: int, base: float = 1.0) -> float:
    """The growth that puts the top frequency ``base * growth**n_freqs`` at ``pi * max_chars``.

    At pi * N rad per unit x, neighbouring characters (1 / (N - 1) apart) are half a period apart,
    which is what the input layer needs to tell them apart.
    """
    return (math.pi * max(max_chars, 2) / base) ** (1.0 / n_freqs)
