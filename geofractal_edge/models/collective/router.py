"""One router per stream: Cantor-prior attention, fingerprint, top-K routing, anchor bank, FFN.

The math is written once, in `route_slots`, over a leading tower axis T: x is [T, B, S, D] and
every weight carries T first. A training `RouterBlock` calls it with T = 1 and its own (live,
differentiable) parameters; the export lowering stacks the parameters of identical routers along
T and calls the very same function, so both paths compute the same thing by construction.

Differences from the v1 prototype (AbstractEyes/geofractal, router/core.py), on purpose:
- the fingerprint's score bias is dotted with each *key*, not each query: a per-query bias is
  constant along the softmax axis and so changes neither the top-K choice nor the weights;
- top-K routing masks the non-top-K scores to -inf and does one dense softmax-matmul (static
  shapes, identical result to the prototype's gather; `route_gather` keeps that form as reference);
- products of two activations are einsums, so the int8/int4 schemes (which quantize MatMul/Gemm)
  touch only products with weights;
- training adds a hinge on each slot's top-K boundary margin (config `route_margin`): routes whose
  K-th and (K+1)-th scores nearly tie flip under quantization noise (int8 route agreement went
  from 0.83-0.97 per router to 1.0 with it, at equal or better accuracy).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from geofractal_edge.models.collective.config import CollectiveConfig

Params = dict[str, Tensor]
SCORE_BIAS_SCALE = 0.1  # as in the prototype


def cantor_prior(rows: int, cols: int) -> Tensor:
    """[S, S] with S = rows * cols: 1 - |idx_i - idx_j| / (max diff + 1), idx = Cantor pairing of (r, c)."""
    idx = torch.tensor([((r + c) * (r + c + 1)) // 2 + c for r in range(rows) for c in range(cols)], dtype=torch.float32)
    diff = (idx[:, None] - idx[None, :]).abs()  # [S, S]
    return 1.0 - diff / (diff.max() + 1.0)


def route_topk(scores: Tensor, values: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Static-shape top-K routing: scores [..., S, S], values [..., S, D] ->
    (out [..., S, D], routes [..., S, K] best first, weights [..., S, K], margin [..., S]).

    Non-top-K scores become -inf and one dense softmax-matmul follows: the softmax over the K kept
    scores, exactly as gathering the K values would give. `margin` is the relative gap at the top-K
    boundary: (K-th best score - (K+1)-th) / spread of the row's scores, i.e. how far the choice is
    from flipping under noise proportional to the scores (a large constant when K = S).
    """
    slots = scores.shape[-1]
    top, order = scores.topk(min(k + 1, slots), dim=-1)  # [..., S, K(+1)], best first
    routes = order[..., :k]
    if k < slots:
        margin = (top[..., k - 1] - top[..., k]) / (scores.std(dim=-1) + 1e-6)
    else:
        margin = torch.full_like(top[..., 0], 1e4)
    keep = torch.zeros_like(scores).scatter(-1, routes, 1.0) > 0  # [..., S, S]
    probs = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
    return torch.einsum("...su,...ud->...sd", probs, values), routes, probs.gather(-1, routes), margin


def route_gather(scores: Tensor, values: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The prototype's form (reference for tests): gather the K values per query, [..., S, K, D] memory."""
    top, routes = scores.topk(k, dim=-1)
    weights = torch.softmax(top, dim=-1)  # [..., S, K]
    expanded = values.unsqueeze(-3).expand(*values.shape[:-2], values.shape[-2], *values.shape[-2:])  # [..., S, S, D]
    gathered = expanded.gather(-2, routes.unsqueeze(-1).expand(*routes.shape, values.shape[-1]))  # [..., S, K, D]
    return (gathered * weights.unsqueeze(-1)).sum(-2), routes, weights


def _norm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """LayerNorm over the last axis with per-tower affine: weight/bias [T, 1, 1, D]."""
    return F.layer_norm(x, x.shape[-1:]) * weight + bias


def _dense(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """[T, B, S, i] @ [T, i, o] + [T, 1, o]: one batched MatMul for all towers."""
    t, b, s, i = x.shape
    return (torch.matmul(x.reshape(t, b * s, i), weight) + bias).reshape(t, b, s, -1)


def route_slots(x: Tensor, p: Params, *, heads: int, k: int, dropout: float = 0.0, training: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x [T, B, S, D] -> (h [T, B, S, D], routes [T, B, S, K] int64, route weights [T, B, S, K], margins [T, B, S])."""
    t, b, s, d = x.shape
    dh = d // heads
    xn = _norm(x, p["norm1_w"], p["norm1_b"])
    # Cantor-prior multi-head attention
    q, kk, v = (_dense(xn, p[f"w{n}"], p[f"b{n}"]).reshape(t, b, s, heads, dh).transpose(2, 3) for n in "qkv")  # [T, B, H, S, dh]
    att = torch.einsum("tbhsd,tbhud->tbhsu", q, kk) * dh**-0.5 + p["cantor"] * p["cantor_scale"]  # [T, B, H, S, S]
    att = F.dropout(torch.softmax(att, dim=-1), dropout, training)
    attn = _dense(torch.einsum("tbhsu,tbhud->tbhsd", att, v).transpose(2, 3).reshape(t, b, s, d), p["wo"], p["bo"])
    # top-K routing: queries from attention, keys/values from the input, fingerprint-gated values
    scores = torch.einsum("tbsd,tbud->tbsu", _dense(attn, p["ws"], p["bs"]), xn) / math.sqrt(d)  # [T, B, S, S]
    if "key_bias" in p:  # fingerprint bias over keys: [T, B, S, D] . [T, D] -> [T, B, 1, S]
        scores = scores + torch.einsum("tbud,td->tbu", xn, p["key_bias"]).unsqueeze(2)
    routed, routes, weights, margins = route_topk(scores, xn * p["value_gate"], k)
    # combine (softmax-normalised weights), residual, pre-norm FFN with residual
    mix = p["mix"]  # [T, 1, 1, 1, 3]
    h = x + mix[..., 0] * attn + mix[..., 1] * routed + mix[..., 2] * p["anchor"]
    ffn = _dense(F.gelu(_dense(_norm(h, p["norm2_w"], p["norm2_b"]), p["w1"], p["b1"])), p["w2"], p["b2"])
    return h + F.dropout(ffn, dropout, training), routes, weights, margins


def pool_opinion(h: Tensor, p: Params) -> Tensor:
    """A router's opinion: its slots averaged and normalised, [T, B, S, D] -> [T, B, D]."""
    return F.layer_norm(h.mean(dim=2), h.shape[-1:]) * p["norm3_w"][:, :, 0] + p["norm3_b"][:, :, 0]


class RouterBlock(nn.Module):
    """A GlobalFractalRouter: fingerprint, Cantor attention, top-K routes, anchors, FFN. x [B, S, D]."""

    def __init__(self, config: CollectiveConfig) -> None:
        super().__init__()
        d, f, a, h = config.feature_dim, config.fingerprint_dim, config.num_anchors, config.num_heads
        self.heads, self.k, self.dropout = h, config.routes, config.dropout
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k_proj, self.v, self.o, self.score = (nn.Linear(d, d) for _ in range(5))
        self.cantor_scale = nn.Parameter(torch.full((h,), 0.1))
        self.register_buffer("cantor", cantor_prior(*config.slot_grid), persistent=False)
        self.ffn_in, self.ffn_out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.combine = nn.Parameter(torch.tensor([1.0, 1.0, 0.1]))
        self.anchors = nn.Parameter(torch.randn(a, d) * 0.02)  # shared behavioural modes
        self.anchor_out = nn.Linear(d, d)
        self.fingerprint = nn.Parameter(torch.randn(f) * 0.02) if config.fingerprints else None
        if config.fingerprints:
            self.fp_gate, self.fp_bias = nn.Linear(f, d), nn.Linear(f, d)
            self.fp_anchor = nn.Sequential(nn.Linear(f, 2 * a), nn.GELU(), nn.Linear(2 * a, a))
        else:
            self.anchor_logits = nn.Parameter(torch.zeros(a))  # one shared mode mix, no identity

    def affinities(self) -> Tensor:
        """[A]: how much this router uses each anchor (sigmoid of an MLP of its fingerprint)."""
        logits = self.fp_anchor(self.fingerprint) if self.fingerprint is not None else self.anchor_logits
        return torch.sigmoid(logits)

    def params(self) -> Params:
        """This router's weights in `route_slots` layout, with T = 1 and the parameter-only terms
        (value gate, key bias, anchor vector, mix) computed from the live parameters."""
        d = self.norm1.normalized_shape[0]

        def lin(layer: nn.Linear) -> tuple[Tensor, Tensor]:
            return layer.weight.t().unsqueeze(0), layer.bias.view(1, 1, -1)

        p: Params = {"norm1_w": self.norm1.weight.view(1, 1, 1, d), "norm1_b": self.norm1.bias.view(1, 1, 1, d)}
        p["norm2_w"], p["norm2_b"] = self.norm2.weight.view(1, 1, 1, d), self.norm2.bias.view(1, 1, 1, d)
        p["norm3_w"], p["norm3_b"] = self.norm3.weight.view(1, 1, 1, d), self.norm3.bias.view(1, 1, 1, d)
        for name, layer in (("q", self.q), ("k", self.k_proj), ("v", self.v), ("o", self.o), ("s", self.score), ("1", self.ffn_in), ("2", self.ffn_out)):
            p[f"w{name}"], p[f"b{name}"] = lin(layer)
        p["cantor"] = self.cantor
        p["cantor_scale"] = self.cantor_scale.view(1, 1, -1, 1, 1)
        anchor = self.anchor_out((self.anchors * self.affinities()[:, None]).sum(0))  # [D]
        p["anchor"] = anchor.view(1, 1, 1, d)
        p["mix"] = torch.softmax(self.combine, dim=0).view(1, 1, 1, 1, 3)
        if self.fingerprint is not None:
            p["value_gate"] = torch.sigmoid(self.fp_gate(self.fingerprint)).view(1, 1, 1, d)
            p["key_bias"] = (SCORE_BIAS_SCALE * self.fp_bias(self.fingerprint)).view(1, d)
        else:
            p["value_gate"] = torch.ones(1, 1, 1, d, device=self.anchors.device)
        return p

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, S, D] -> (h [B, S, D], routes [B, S, K], weights [B, S, K])."""
        h, routes, weights, _ = route_slots(x.unsqueeze(0), self.params(), heads=self.heads, k=self.k, dropout=self.dropout, training=self.training)
        return h[0], routes[0], weights[0]
