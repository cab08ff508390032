"""Fusion: combine the streams' opinions [T, B, D] into one [B, D] for the classifier.

`AdaptiveFusion` weighs each stream per sample: a learned prior per stream plus a gate read from
the opinion itself (shared across streams), softmax-normalised over streams, so that a stream that
is unsure on this sample can be turned down. `MeanFusion` is the plain average (for comparisons).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from geofractal_edge.models.collective.config import CollectiveConfig


class AdaptiveFusion(nn.Module):
    def __init__(self, config: CollectiveConfig) -> None:
        super().__init__()
        self.prior = nn.Parameter(torch.zeros(config.num_streams))  # [T]
        self.gate = nn.Sequential(nn.LayerNorm(config.feature_dim), nn.Linear(config.feature_dim, 1))

    def weights(self, opinions: Tensor) -> Tensor:
        """[T, B, D] -> [T, B, 1], summing to one over streams."""
        return torch.softmax(self.gate(opinions) + self.prior[:, None, None], dim=0)

    def forward(self, opinions: Tensor) -> Tensor:
        return (self.weights(opinions) * opinions).sum(dim=0)


class MeanFusion(nn.Module):
    def __init__(self, config: CollectiveConfig) -> None:
        super().__init__()

    def forward(self, opinions: Tensor) -> Tensor:
        return opinions.mean(dim=0)


def build_fusion(config: CollectiveConfig) -> nn.Module:
    return AdaptiveFusion(config) if config.fusion == "adaptive" else MeanFusion(config)
