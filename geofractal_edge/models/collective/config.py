"""Hyper-parameters of a router collective: its streams, the shared router shape, training schedule.

One frozen dataclass holds everything needed to rebuild a collective and to reproduce its training,
so that a checkpoint's JSON metadata is the whole recipe. Streams are data too (`StreamConfig`):
a stream's kind says what it turns its input into slots with, its view what it sees of the input.

Every router in a collective has the same shape (feature_dim, slots, heads, anchors, routes), so
that the export lowering can stack all routers into one batched set of tensor ops.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.checkpoint_io import known_fields

STREAM_KINDS = ("feature", "conv", "frozen", "array")
VIEWS = ("pixels", "projections", "gradients", "coarse")  # what a feature stream sees of an 8x8 image
FUSIONS = ("adaptive", "mean")


@dataclass(frozen=True)
class StreamConfig:
    """One stream: `kind` "feature" (a fixed view + projection), "conv" (a trainable conv net),
    "frozen" (a frozen encoder behind a port, e.g. MiniLM from a local folder; text input) or
    "array" (the user's own features, `width` columns of the input, e.g. a frozen model's 768-d embedding)."""

    name: str
    kind: str = "feature"
    view: str = "pixels"  # feature streams only
    channels: tuple[int, ...] = (16, 32)  # conv streams only
    port: str = ""  # frozen streams only: the encoder's local folder ("" = the bundled MiniLM)
    width: int = 0  # array streams only: its columns of the input (streams take consecutive columns, in order)

    def __post_init__(self) -> None:
        if self.kind not in STREAM_KINDS:
            raise GfedgeError(f"unknown stream kind '{self.kind}'", f"use one of: {', '.join(STREAM_KINDS)}")
        if self.kind == "feature" and self.view not in VIEWS:
            raise GfedgeError(f"unknown view '{self.view}' for stream {self.name}", f"use one of: {', '.join(VIEWS)}")
        if self.kind == "conv" and (not self.channels or min(self.channels) < 1):
            raise GfedgeError(f"conv stream {self.name} needs positive channel counts", "e.g. channels=(16, 32)")
        if (self.kind == "array") != (self.width > 0):
            raise GfedgeError(f"stream {self.name}: an array stream needs a positive width, other kinds none", "set width only on kind='array' streams")

    def signature(self) -> tuple:
        """Streams with equal signatures are identical towers: the lowering stacks them."""
        if self.kind == "array":  # each reads its own columns: never identical to another stream
            return (self.kind, self.name, self.width)
        return (self.kind, self.view if self.kind == "feature" else None, tuple(self.channels) if self.kind == "conv" else None, self.port if self.kind == "frozen" else None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamConfig:
        return cls(**{**data, "channels": tuple(data.get("channels", (16, 32)))})


@dataclass(frozen=True)
class CollectiveConfig:
    """Everything that defines a collective and how it is trained.

    Inputs are digits' raw pixel values in [0, `input_scale`]; the model divides by `input_scale`.
    `mailbox` and `fingerprints` switch those mechanisms off for the ablation.
    """

    streams: tuple[StreamConfig, ...]
    input_dim: int = 64
    input_scale: float = 16.0
    num_classes: int = 10
    feature_dim: int = 64
    fingerprint_dim: int = 16
    num_heads: int = 4
    num_anchors: int = 8
    num_routes: int = 4
    slot_grid: tuple[int, int] = (4, 2)  # S = rows * cols slots per stream
    message_dim: int = 32
    mailbox: bool = True
    fingerprints: bool = True
    fusion: str = "adaptive"
    dropout: float = 0.1
    # routes that survive quantization noise: a hinge pushes each slot's relative top-K boundary
    # gap (see router.route_topk) above `route_margin`, weighted by `route_margin_weight`
    route_margin: float = 1.0
    route_margin_weight: float = 1.0
    # training
    epochs: int = 60
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    shift_augment: bool = True  # random +-1 pixel shifts of the 8x8 image during training

    def __post_init__(self) -> None:
        if not self.streams:
            raise GfedgeError("a collective needs at least one stream", "add a StreamConfig")
        names = [s.name for s in self.streams]
        if len(set(names)) != len(names):
            raise GfedgeError(f"stream names must be unique, got {names}", "rename the duplicates")
        if self.feature_dim % self.num_heads:
            raise GfedgeError(f"feature_dim {self.feature_dim} is not divisible by num_heads {self.num_heads}", "pick num_heads that divides feature_dim")
        if min(self.feature_dim, self.fingerprint_dim, self.num_anchors, self.num_routes, self.message_dim, *self.slot_grid) < 1:
            raise GfedgeError("dimensions, anchors, routes and slot grid must all be positive", "fix the collective config")
        if self.fusion not in FUSIONS:
            raise GfedgeError(f"unknown fusion '{self.fusion}'", f"use one of: {', '.join(FUSIONS)}")
        arrays = [s for s in self.streams if s.kind == "array"]
        if arrays and (len(arrays) != len(self.streams) or sum(s.width for s in arrays) != self.input_dim):
            raise GfedgeError(f"array streams must be all the streams and their widths must sum to input_dim {self.input_dim}", "build it with CollectiveConfig.arrays(...)")

    @property
    def num_slots(self) -> int:
        return self.slot_grid[0] * self.slot_grid[1]

    @property
    def routes(self) -> int:
        """Top-K actually used: K is capped at the number of slots."""
        return min(self.num_routes, self.num_slots)

    @property
    def num_streams(self) -> int:
        return len(self.streams)

    def replace(self, **changes: Any) -> CollectiveConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """asdict, with `width` only on array streams: other configs (the shipped defaults' recipes) keep their dict."""
        data = asdict(self)
        data["streams"] = [{k: v for k, v in s.items() if k != "width" or v} for s in data["streams"]]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectiveConfig:
        """Rebuild from `to_dict()` output; unknown fields are refused so that typos surface."""
        known_fields(cls, data, what="collective")
        data = dict(data)
        data["streams"] = tuple(StreamConfig.from_dict(s) for s in data["streams"])
        data["slot_grid"] = tuple(data.get("slot_grid", (4, 2)))
        return cls(**data)

    @classmethod
    def digits(cls) -> CollectiveConfig:
        """The default digits collective: four streams that see the 8x8 images differently."""
        return cls(streams=digits_streams())

    @classmethod
    def tiny(cls) -> CollectiveConfig:
        """A small, fast configuration for tests (a few seconds of training)."""
        streams = (StreamConfig("pixels"), StreamConfig("projections", view="projections"), StreamConfig("gradients", view="gradients"), StreamConfig("conv", kind="conv", channels=(8, 16)))
        return cls(streams=streams, feature_dim=32, fingerprint_dim=8, num_heads=2, num_anchors=4, num_routes=2, slot_grid=(2, 2), message_dim=16, epochs=12, lr=4e-3)

    @classmethod
    def text(cls, towers: int = 2, *, port: str = "", num_classes: int = 4) -> CollectiveConfig:
        """`towers` streams over one frozen encoder (default: the bundled MiniLM), for the pydoc
        topic task: they read the same embedding and differ by their routers; they stack at export."""
        streams = tuple(StreamConfig(f"text{i}", kind="frozen", port=port) for i in range(towers))
        return cls(streams=streams, num_classes=num_classes, feature_dim=32, fingerprint_dim=8, num_heads=2, num_anchors=4,
                   num_routes=2, slot_grid=(2, 2), message_dim=16, epochs=30, lr=4e-3, shift_augment=False)

    @classmethod
    def arrays(cls, widths: dict[str, int], *, num_classes: int) -> CollectiveConfig:
        """One array stream per entry of `widths` (name -> columns, in input order), over the user's features as they are."""
        streams = tuple(StreamConfig(name, kind="array", width=width) for name, width in widths.items())
        return cls(streams=streams, input_dim=sum(widths.values()), input_scale=1.0, num_classes=num_classes, feature_dim=32, fingerprint_dim=8,
                   num_heads=2, num_anchors=4, num_routes=2, slot_grid=(2, 2), message_dim=16, epochs=30, lr=4e-3, shift_augment=False)

    @classmethod
    def towers(cls, n: int, *, feature_dim: int = 64) -> CollectiveConfig:
        """`n` identical pixel towers (for the wide-lowering test and benchmark)."""
        return cls(streams=tuple(StreamConfig(f"tower{i}") for i in range(n)), feature_dim=feature_dim)


def digits_streams() -> tuple[StreamConfig, ...]:
    return (
        StreamConfig("pixels", view="pixels"),
        StreamConfig("projections", view="projections"),
        StreamConfig("gradients", view="gradients"),
        StreamConfig("conv", kind="conv", channels=(16, 32)),
    )

