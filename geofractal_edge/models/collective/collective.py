"""RouterCollective: streams -> one router each -> mailbox -> fusion -> classifier (training side).

This is the readable, per-stream form that trains. The export form is `lowering.lower(...)`, which
stacks identical towers; both compute the same logits and routes. The model keeps no per-forward
state: routes, margins and opinions come back in `forward`'s info. Training lives in train.py, which
imports this module, never the other way round.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from geofractal_edge.models.collective.config import CollectiveConfig
from geofractal_edge.models.collective.fusion import build_fusion
from geofractal_edge.models.collective.mailbox import Mailbox
from geofractal_edge.models.collective.router import RouterBlock, pool_opinion, route_slots
from geofractal_edge.models.collective.streams import FrozenStream, build_stream


class RouterCollective(nn.Module):
    def __init__(self, config: CollectiveConfig, *, ports: Mapping[str, object] | None = None) -> None:
        super().__init__()
        ports = ports or {}
        self.config = config
        self.streams = nn.ModuleDict({s.name: build_stream(s, config, port=ports.get(s.name)) for s in config.streams})
        self.routers = nn.ModuleDict({s.name: RouterBlock(config) for s in config.streams})
        self.mailbox = Mailbox(config) if config.mailbox else None
        self.fusion = build_fusion(config)
        self.head = nn.Sequential(nn.LayerNorm(config.feature_dim), nn.Linear(config.feature_dim, config.num_classes))

    @property
    def names(self) -> list[str]:
        return list(self.streams)

    @property
    def frozen(self) -> bool:
        """True when any stream wraps a frozen encoder."""
        return any(isinstance(s, FrozenStream) for s in self.streams.values())

    def stream_input(self, x, name: str):
        """Streams share one feature tensor (scaled to [0, 1]) or each reads its entry of a mapping.
        A frozen stream's input (tokens or the encoder's embeddings) is never scaled."""
        if isinstance(x, Mapping):
            x = x[name]
        if isinstance(self.streams[name], FrozenStream) or not isinstance(x, Tensor):
            return x
        return x / self.config.input_scale

    def forward(self, x: Tensor | Mapping[str, object]) -> tuple[Tensor, dict[str, Tensor]]:
        """x: raw features [B, input_dim] (or {stream: input}) -> (logits [B, C], info).

        info: routes [T, B, S, K] int64 (the K kept slots, ascending), route_weights [T, B, S, K]
        (best first), margins [T, B] (smallest relative top-K boundary gap over slots), slot_margins
        [T, B, S], opinions [T, B, D].
        """
        c = self.config
        opinions, routes, weights, margins = [], [], [], []
        for name, stream in self.streams.items():
            router = self.routers[name]
            p = router.params()
            h, r, w, m = route_slots(stream(self.stream_input(x, name)).unsqueeze(0), p, heads=c.num_heads, k=c.routes, dropout=c.dropout, training=self.training)
            opinions.append(pool_opinion(h, p))
            routes.append(r)
            weights.append(w)
            margins.append(m)
        opinions_t, weights_t = torch.cat(opinions), torch.cat(weights)  # [T, B, D], [T, B, S, K]
        if self.mailbox is not None:
            opinions_t = self.mailbox(opinions_t, weights_t.mean(dim=2), self.mailbox.address(self.fingerprints()))
        logits = self.head(self.fusion(opinions_t))
        routes_t = torch.cat(routes).sort(dim=-1).values  # [T, B, S, K]
        margins_t = torch.cat(margins)  # [T, B, S]
        info = {"routes": routes_t, "route_weights": weights_t, "margins": margins_t.amin(dim=-1), "slot_margins": margins_t, "opinions": opinions_t}
        return logits, info

    def fingerprints(self) -> Tensor | None:
        """[T, F], the routers' fingerprints in stream order, or None when they are switched off."""
        prints = [r.fingerprint for r in self.routers.values()]
        return None if any(p is None for p in prints) else torch.stack(prints)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What `train.fit` optimizes: everything with requires_grad (a frozen encoder has none)."""
        return [p for p in self.parameters() if p.requires_grad]
