"""Task metrics: what the model is for, measured on torch's outputs and the runtime's alike.

A metric takes the outputs and labels of one golden case and returns (correct, total), so that
cases of different sizes combine exactly. Registered by name; the manifest names the family's metric.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

Metric = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], tuple[int, int]]
METRICS: dict[str, Metric] = {}


def metric(name: str) -> Callable[[Metric], Metric]:
    def bind(fn: Metric) -> Metric:
        METRICS[name] = fn
        return fn

    return bind


@metric("char_accuracy")
def char_accuracy(outputs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """Share of positions whose argmax character is the true one (Atlas)."""
    predicted = np.asarray(outputs["logits"]).argmax(axis=-1)
    truth = np.asarray(labels["chars"])
    return int((predicted == truth).sum()), int(truth.size)


@metric("accuracy")
def accuracy(outputs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """Classification accuracy (collectives)."""
    predicted = np.asarray(outputs["logits"]).argmax(axis=-1)
    truth = np.asarray(labels["class"])
    return int((predicted == truth).sum()), int(truth.size)


@metric("embedding_retrieval")
def embedding_retrieval(outputs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """Share of sentences whose nearest reference embedding (cosine, within the case) is their own (collective-encoder)."""
    got = np.asarray(outputs["sentence_embedding"], np.float64)
    want = np.asarray(labels["sentence_embedding"], np.float64)
    got = got / np.maximum(np.linalg.norm(got, axis=-1, keepdims=True), 1e-12)
    want = want / np.maximum(np.linalg.norm(want, axis=-1, keepdims=True), 1e-12)
    return int(((got @ want.T).argmax(axis=-1) == np.arange(len(got))).sum()), int(len(got))
