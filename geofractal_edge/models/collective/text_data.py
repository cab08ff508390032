"""Real text for a collective of frozen-encoder streams: which pydoc topic a sentence comes from.

Four topics of CPython's `pydoc_data.topics` with the most prose sentences (compound, debugger,
specialnames, types: 607 sentences), split stratified 75/25 with a fixed seed, so every run and a
bundle's golden case score the same sentences. Offline: the text ships with CPython.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from geofractal_edge.models.collective.encoder import topic_sentences

TOPICS = ("compound", "debugger", "specialnames", "types")
TEST_FRACTION = 0.25
SPLIT_SEED = 0


@dataclass(frozen=True)
class TextSplit:
    train_texts: list[str]
    y_train: Tensor  # [N] int64, index into TOPICS
    test_texts: list[str]
    y_test: Tensor


def topic_split(*, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> TextSplit:
    """The fixed stratified train / held-out split of the topic task."""
    from sklearn.model_selection import train_test_split

    texts, labels = [], []
    for label, topic in enumerate(TOPICS):
        found = topic_sentences(topic)
        texts += found
        labels += [label] * len(found)
    x_train, x_test, y_train, y_test = train_test_split(texts, np.array(labels, np.int64), test_size=test_fraction, random_state=seed, stratify=labels)
    return TextSplit(list(x_train), torch.from_numpy(y_train), list(x_test), torch.from_numpy(y_test))
