"""Streams: each turns the input into slots [B, S, D] its router works on, seeing it its own way.

- `FeatureStream`: a fixed view of the input (pixels, projections, gradients, coarse), then one
  projection to S slots of width D plus a learned slot position.
- `TrainableStream`: a small conv net over the 8x8 image, then the same kind of projection.
- `FrozenStream`: a frozen encoder behind a port (e.g. MiniLM, text in), then a projection; the
  encoder never trains and always runs in eval mode.

Views are fixed tensor functions of the image scaled to [0, 1] (no parameters, exportable): the
collective divides raw digits values (0..16) by `input_scale` before any stream sees them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from geofractal_edge.models.collective.config import CollectiveConfig, StreamConfig

SIDE = 8  # digits images are 8x8
INK = 0.25  # a pixel above 4/16 counts as ink for the projection view


def projection_matrix(side: int = SIDE) -> Tensor:
    """[side*side, 6*side-2]: 0/1 sums along rows, columns, diagonals and anti-diagonals."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    groups = [rows, side + cols, 2 * side + (rows - cols + side - 1), 4 * side - 1 + (rows + cols)]
    out = torch.zeros(side * side, 6 * side - 2)
    for index in groups:
        out[torch.arange(side * side), index] = 1.0
    return out


def view_pixels(x: Tensor, stream: nn.Module) -> Tensor:
    return x


def view_projections(x: Tensor, stream: nn.Module) -> Tensor:
    """Radon-like line sums of the grey image and of its ink mask: [B, 64] -> [B, 92]."""
    ink = (x > INK).to(x.dtype)
    return torch.cat([x @ stream.lines, ink @ stream.lines], dim=1) / SIDE


def view_gradients(x: Tensor, stream: nn.Module) -> Tensor:
    """Edge polarity maps: rectified horizontal and vertical differences, [B, 64] -> [B, 224]."""
    img = x.reshape(-1, SIDE, SIDE)
    dx = (img[:, :, 1:] - img[:, :, :-1]).flatten(1)  # [B, 56]
    dy = (img[:, 1:, :] - img[:, :-1, :]).flatten(1)  # [B, 56]
    return torch.cat([F.relu(dx), F.relu(-dx), F.relu(dy), F.relu(-dy)], dim=1)


def view_coarse(x: Tensor, stream: nn.Module) -> Tensor:
    """2x2 average pooling: the image at half resolution, [B, 64] -> [B, 16]."""
    return x.reshape(-1, SIDE // 2, 2, SIDE // 2, 2).mean(dim=(2, 4)).flatten(1)


VIEWS: dict[str, tuple[Callable[[Tensor, nn.Module], Tensor], int | None]] = {
    "pixels": (view_pixels, None),  # None: as wide as the input
    "projections": (view_projections, 2 * (6 * SIDE - 2)),
    "gradients": (view_gradients, 4 * SIDE * (SIDE - 1)),
    "coarse": (view_coarse, (SIDE // 2) ** 2),
}


class SlotProjection(nn.Module):
    """[B, d_in] -> [B, S, D]: one Linear to S*D, plus a learned position per slot."""

    def __init__(self, d_in: int, config: CollectiveConfig) -> None:
        super().__init__()
        self.slots, self.dim = config.num_slots, config.feature_dim
        self.proj = nn.Linear(d_in, self.slots * self.dim)
        self.position = nn.Parameter(torch.randn(self.slots, self.dim) * 0.02)

    def forward(self, v: Tensor) -> Tensor:
        return self.proj(v).reshape(-1, self.slots, self.dim) + self.position


class FeatureStream(nn.Module):
    def __init__(self, stream: StreamConfig, config: CollectiveConfig) -> None:
        super().__init__()
        self.config = stream
        self.view, width = VIEWS[stream.view]
        if stream.view == "projections":
            self.register_buffer("lines", projection_matrix(), persistent=False)
        self.slots = SlotProjection(width or config.input_dim, config)

    def features(self, x: Tensor) -> Tensor:
        return self.view(x, self)

    def forward(self, x: Tensor) -> Tensor:
        return self.slots(self.features(x))


def view_columns(x: Tensor, stream: nn.Module) -> Tensor:
    """An array stream's own columns of the input: [B, input_dim] -> [B, width]."""
    return x[:, stream.start : stream.stop]


class ArrayStream(nn.Module):
    """The user's own features for this stream (its `width` consecutive input columns), projected to slots."""

    def __init__(self, stream: StreamConfig, config: CollectiveConfig) -> None:
        super().__init__()
        self.config = stream
        names = [s.name for s in config.streams]
        self.start = sum(s.width for s in config.streams[: names.index(stream.name)])
        self.stop = self.start + stream.width
        self.view = view_columns
        self.slots = SlotProjection(stream.width, config)

    def features(self, x: Tensor) -> Tensor:
        return self.view(x, self)

    def forward(self, x: Tensor) -> Tensor:
        return self.slots(self.features(x))


class TrainableStream(nn.Module):
    """Conv 3x3 layers (GELU) over the 8x8 image, 2x2 average pool, projection to slots."""

    def __init__(self, stream: StreamConfig, config: CollectiveConfig) -> None:
        super().__init__()
        self.config = stream
        widths = (1, *stream.channels)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths, widths[1:]))
        self.slots = SlotProjection(stream.channels[-1] * (SIDE // 2) ** 2, config)

    def features(self, x: Tensor) -> Tensor:
        h = x.reshape(-1, 1, SIDE, SIDE)
        for conv in self.convs:
            h = F.gelu(conv(h))
        return F.avg_pool2d(h, 2).flatten(1)  # [B, C * 16]

    def forward(self, x: Tensor) -> Tensor:
        return self.slots(self.features(x))


class FrozenStream(nn.Module):
    """A frozen encoder (through a port) then a trainable projection to slots.

    The port's module is kept out of `parameters()`' gradients (requires_grad False) and in eval
    mode whatever the stream's mode, so `fit` trains only the projection, routers, fusion and head.
    """

    def __init__(self, stream: StreamConfig, config: CollectiveConfig, *, port=None) -> None:
        super().__init__()
        from geofractal_edge.models.collective.encoder import TextPort

        self.config = stream
        self.port = port if port is not None else TextPort.load(stream.port or None)
        self.port.freeze()
        self.slots = SlotProjection(self.port.dim, config)

    def train(self, mode: bool = True) -> FrozenStream:
        super().train(mode)
        self.port.module.eval()
        return self

    def features(self, batch) -> Tensor:
        """A token batch through the frozen encoder, or a float [B, E] batch of its embeddings as is
        (what the exported graph takes: the encoder runs as its own bundle in front of it)."""
        if isinstance(batch, Tensor) and batch.is_floating_point():
            return batch
        with torch.no_grad():
            return self.port.encode(batch)

    def forward(self, batch) -> Tensor:
        return self.slots(self.features(batch))


def build_stream(stream: StreamConfig, config: CollectiveConfig, *, port=None) -> nn.Module:
    if stream.kind == "feature":
        return FeatureStream(stream, config)
    if stream.kind == "conv":
        return TrainableStream(stream, config)
    if stream.kind == "array":
        return ArrayStream(stream, config)
    return FrozenStream(stream, config, port=port)
