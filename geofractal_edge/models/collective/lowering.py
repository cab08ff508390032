"""Wide lowering: the training collective -> one module whose graph does not grow with tower count.

- Streams with equal `StreamConfig.signature()` are identical towers: each group becomes one
  stacked front-end (a feature group computes its view once and projects with one [d, T*S*D]
  matmul; a conv group runs one conv with the towers' filters concatenated, then grouped convs).
  Heterogeneous streams each get their own group, hence their own subgraph.
- All routers share one shape, so they are stacked along a tower axis and run by the very
  `route_slots` the training side uses, with [T, ...] weights: one batched op per router op.
- Parameter-only terms (fingerprint value gates, key biases, anchor vectors, mix weights, mailbox
  addresses) are evaluated once here and become constants.
- Top-K routing stays static-shape: TopK with a fixed K, scatter to a mask, -inf, dense softmax.
- Nothing Python-side (caches, per-stream dicts, names) is kept: forward is tensors in, tensors out.

A collective whose streams all wrap one frozen encoder lowers to `WideTextCollective`, whose input
is that encoder's `sentence_embedding` (the encoder runs as its own bundle in front of it).

`WideCollective.forward(features [B, input_dim]) -> (logits [B, C], routes [T, B, S, K] int64,
margins [T, B])`: routes are each slot's K kept slots in ascending order (the set is what the
computation uses; the order of near-equal scores inside it is not a decision), margins the smallest
gap over slots between the K-th and (K+1)-th score, for parity's near-tie report.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.collective.collective import RouterCollective
from geofractal_edge.models.collective.router import pool_opinion, route_slots
from geofractal_edge.models.collective.streams import SIDE, FeatureStream, FrozenStream, TrainableStream


class StackedFeatureGroup(nn.Module):
    """T identical feature streams: one view, one projection to all towers' slots. Frozen-encoder
    streams are the same with no view: their input is the encoder's embedding."""

    def __init__(self, streams: list[FeatureStream | FrozenStream]) -> None:
        super().__init__()
        first = streams[0]
        self.view = getattr(first, "view", None)
        if hasattr(first, "lines"):
            self.register_buffer("lines", first.lines.clone())
        self.start, self.stop = getattr(first, "start", 0), getattr(first, "stop", None)  # an array stream's columns
        self.towers, self.slots, self.dim = len(streams), first.slots.slots, first.slots.dim
        self.register_buffer("weight", torch.cat([s.slots.proj.weight.t() for s in streams], dim=1).detach().clone())  # [d, T*S*D]
        self.register_buffer("bias", torch.cat([s.slots.proj.bias for s in streams]).detach().clone())
        self.register_buffer("position", torch.stack([s.slots.position for s in streams]).detach().clone()[:, None])  # [T, 1, S, D]

    def forward(self, x: Tensor) -> Tensor:
        """[B, input_dim] -> [T, B, S, D]."""
        h = (x if self.view is None else self.view(x, self)) @ self.weight + self.bias  # [B, T*S*D]
        return h.reshape(-1, self.towers, self.slots, self.dim).transpose(0, 1) + self.position


class StackedConvGroup(nn.Module):
    """T identical conv streams: the first conv's filters concatenated (the towers share its input),
    later convs grouped by tower, then one batched projection."""

    def __init__(self, streams: list[TrainableStream]) -> None:
        super().__init__()
        self.towers = len(streams)
        first = streams[0]
        self.slots, self.dim = first.slots.slots, first.slots.dim
        self.convs = nn.ModuleList()
        for layer, convs in enumerate(zip(*(s.convs for s in streams))):
            stacked = nn.Conv2d(convs[0].in_channels * (1 if layer == 0 else self.towers), convs[0].out_channels * self.towers, 3, padding=1, groups=1 if layer == 0 else self.towers)
            stacked.weight.data = torch.cat([c.weight for c in convs]).detach().clone()
            stacked.bias.data = torch.cat([c.bias for c in convs]).detach().clone()
            self.convs.append(stacked.requires_grad_(False))
        self.register_buffer("weight", torch.stack([s.slots.proj.weight.t() for s in streams]).detach().clone())  # [T, F, S*D]
        self.register_buffer("bias", torch.stack([s.slots.proj.bias for s in streams]).detach().clone()[:, None])  # [T, 1, S*D]
        self.register_buffer("position", torch.stack([s.slots.position for s in streams]).detach().clone()[:, None])  # [T, 1, S, D]

    def forward(self, x: Tensor) -> Tensor:
        h = x.reshape(-1, 1, SIDE, SIDE)
        for conv in self.convs:
            h = F.gelu(conv(h))
        h = F.avg_pool2d(h, 2).reshape(h.shape[0], self.towers, -1).transpose(0, 1)  # [T, B, C * 16]
        return (h @ self.weight + self.bias).reshape(self.towers, -1, self.slots, self.dim) + self.position


class WideCollective(nn.Module):
    """The export form of a `RouterCollective` (see the module docstring)."""

    def __init__(self, collective: RouterCollective, *, stack: bool = True) -> None:
        super().__init__()
        config = collective.config
        self.heads, self.k, self.scale, self.stack = config.num_heads, config.routes, config.input_scale, stack
        streams = list(collective.streams.values())
        groups = group_towers(collective) if stack else [[i] for i in range(len(streams))]
        self.fronts = nn.ModuleList(_stack_group([streams[i] for i in members]) for members in groups)
        order = [i for members in groups for i in members]
        self.reorder = order != sorted(order)
        self.register_buffer("restore", torch.argsort(torch.tensor(order)))  # stacked position -> stream order
        with torch.no_grad():
            per_router = [router.params() for router in collective.routers.values()]
            stacked = {name: per_router[0][name] if name == "cantor" else torch.cat([p[name] for p in per_router]) for name in per_router[0]}
            address = None if collective.mailbox is None else collective.mailbox.address(collective.fingerprints())
        self.param_names = tuple(stacked)
        for name, value in stacked.items():
            self.register_buffer(f"router_{name}", value.detach().clone())
        self.register_buffer("mailbox_address", None if address is None else address.detach().clone())
        self.mailbox = copy.deepcopy(collective.mailbox)
        self.fusion, self.head = copy.deepcopy(collective.fusion), copy.deepcopy(collective.head)
        self.eval().requires_grad_(False)

    def _router_params(self) -> dict[str, Tensor]:
        return {name: getattr(self, f"router_{name}") for name in self.param_names}

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """features [B, input_dim] raw values -> (logits [B, C], routes [T, B, S, K] int64, margins [T, B])."""
        return self.run(features / self.scale)

    def run(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The graph after input scaling: x [B, d] as the streams read it."""
        slots = torch.cat([front(x) for front in self.fronts]) if len(self.fronts) > 1 else self.fronts[0](x)  # [T, B, S, D]
        if self.reorder:
            slots = slots.index_select(0, self.restore)
        p = self._router_params()
        if self.stack:
            h, routes, weights, margins = route_slots(slots, p, heads=self.heads, k=self.k)
        else:  # one router after the other: the per-tower graph, for comparison only
            each = [route_slots(slots[i : i + 1], _tower(p, i), heads=self.heads, k=self.k) for i in range(slots.shape[0])]
            h, routes, weights, margins = (torch.cat(parts) for parts in zip(*each))
        opinions = pool_opinion(h, p)  # [T, B, D]
        if self.mailbox is not None:
            opinions = self.mailbox(opinions, weights.mean(dim=2), self.mailbox_address)
        return self.head(self.fusion(opinions)), routes.sort(dim=-1).values, margins.amin(dim=-1)


def _tower(p: dict[str, Tensor], i: int) -> dict[str, Tensor]:
    return {name: value if name == "cantor" else value[i : i + 1] for name, value in p.items()}


def group_towers(collective: RouterCollective) -> list[list[int]]:
    """Stream indices grouped by signature, groups in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, stream in enumerate(collective.config.streams):
        groups.setdefault(stream.signature(), []).append(i)
    return list(groups.values())


class WideTextCollective(WideCollective):
    """A collective whose streams all wrap one frozen encoder: the graph takes the encoder's
    sentence embedding (the output of the encoder's own bundle), unscaled."""

    def forward(self, sentence_embedding: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.run(sentence_embedding)


def lower(collective: RouterCollective, *, stack: bool = True) -> WideCollective:
    """The stacked, export-ready form of a trained collective (eval mode, no gradients).

    `stack=False` keeps one subgraph per tower (the naive form, for benchmarks and tests). A
    collective of frozen-encoder streams lowers to a `WideTextCollective`; one that mixes them with
    image streams, or wraps two different encoders, is refused (one graph input per encoder bundle)."""
    frozen = {s.signature() for s in collective.config.streams if s.kind == "frozen"}
    if not frozen:
        return WideCollective(collective.eval(), stack=stack)
    if len(frozen) > 1 or len(frozen) != len({s.signature() for s in collective.config.streams}):
        raise GfedgeError(
            "this collective mixes a frozen encoder with other streams (or wraps two encoders); it cannot be one graph behind one encoder bundle",
            "export collectives whose streams all wrap the same encoder, or only image streams",
        )
    return WideTextCollective(collective.eval(), stack=stack)


def _stack_group(streams: list[nn.Module]) -> nn.Module:
    if isinstance(streams[0], TrainableStream):
        return StackedConvGroup(streams)
    return StackedFeatureGroup(streams)
