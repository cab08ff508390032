"""A small character-level LM whose FFNs are TrixFFN, or a dense FFN with the same active parameters.

Token embedding + learned positions, `n_layers` pre-norm blocks (causal self-attention, then FFN),
a final LayerNorm and a linear head. The dense baseline's FFN is d_model -> d_hidden -> d_model in
float, i.e. exactly one tile's shape: per token both models run the same number of FFN weights.
Neither FFN has biases (a tile has none, so the baseline has none either).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.trix.config import TrixConfig
from geofractal_edge.models.trix.ffn import TrixFFN

FFN_KINDS = ("trix", "dense")


class DenseFFN(nn.Module):
    """The baseline: one float FFN d_model -> d_hidden -> d_model, GELU, no biases."""

    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_hidden, bias=False)
        self.down = nn.Linear(d_hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(x)))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: [B, T, d] -> [B, T, d]."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)  # each [B, H, T, dh]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, dh]
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """x + attn(norm1(x)), then + ffn(norm2(x)). The FFN sees norm2(x): that is what TriX routes on."""

    def __init__(self, config: TrixConfig, ffn: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config.d_model, config.n_heads)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.ffn = make_ffn(config, ffn)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class TrixLM(nn.Module):
    """tokens int64 [B, T] (T <= context) -> logits [B, T, V]."""

    def __init__(self, config: TrixConfig, *, ffn: str = "trix") -> None:
        super().__init__()
        if ffn not in FFN_KINDS:
            raise GfedgeError(f"unknown FFN kind '{ffn}'", f"use one of: {', '.join(FFN_KINDS)}")
        self.config = config
        self.ffn_kind = ffn
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Parameter(torch.randn(config.context, config.d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(config, ffn) for _ in range(config.n_layers))
        self.norm_out = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size)
        nn.init.normal_(self.tok_emb.weight, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm_out(x))

    def embed(self, tokens: Tensor) -> Tensor:
        """[B, T] -> [B, T, d]: token embedding + the first T learned positions."""
        t = tokens.shape[1]
        if t > self.config.context:
            raise GfedgeError(f"{t} tokens exceed the model's context of {self.config.context}", "feed at most `context` tokens")
        return self.tok_emb(tokens) + self.pos_emb[:t]

    @torch.no_grad()
    def forward_with_routes(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Eval-mode hard forward that also returns each layer's routes: (logits [B, T, V], routes [L, B, T] int64, margins [L, B, T] float32).

        Each FFN runs on the very routes reported, so they are the reference that lowerings must reproduce.
        """
        if self.ffn_kind != "trix":
            raise GfedgeError("a dense baseline has no routes", "build the model with ffn='trix'")
        x = self.embed(tokens)
        routes, margins = [], []
        for block in self.blocks:
            x = x + block.attn(block.norm1(x))
            h = block.norm2(x)
            route, margin = block.ffn.routes(h)
            x = x + block.ffn.forward_hard(h, route)
            routes.append(route)
            margins.append(margin)
        return self.head(self.norm_out(x)), torch.stack(routes), torch.stack(margins)

    def trix_ffns(self) -> list[TrixFFN]:
        return [block.ffn for block in self.blocks if isinstance(block.ffn, TrixFFN)]

    def aux_loss(self) -> Tensor:
        """Sum of the TriX FFNs' load-balancing terms from the last training forward (0 for dense)."""
        terms = [ffn.aux_loss for ffn in self.trix_ffns() if ffn.aux_loss is not None]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def margin_loss(self) -> Tensor:
        """Sum of the TriX FFNs' route-margin hinges from the last training forward (0 when off)."""
        terms = [ffn.margin_loss for ffn in self.trix_ffns() if ffn.margin_loss is not None]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def set_route_margin(self, margin: float) -> None:
        for ffn in self.trix_ffns():
            ffn.route_margin = margin

    def set_temperature(self, temperature: float) -> None:
        for ffn in self.trix_ffns():
            ffn.temperature = temperature

    def rebuild_hierarchy(self) -> None:
        for ffn in self.trix_ffns():
            ffn.rebuild_hierarchy()

    def parameter_counts(self) -> dict[str, int]:
        """Total parameters, and the FFN weights one token actually runs (summed over layers)."""
        total = sum(p.numel() for p in self.parameters())
        ffn_active = self.config.n_layers * 2 * self.config.d_model * self.config.d_hidden
        return {"total": total, "ffn_active_per_token": ffn_active}


def make_ffn(config: TrixConfig, ffn: str) -> nn.Module:
    if ffn == "dense":
        return DenseFFN(config.d_model, config.d_hidden)
    return TrixFFN(
        config.d_model,
        config.d_hidden,
        config.n_tiles,
        routing=config.routing,
        n_clusters=config.n_clusters,
        cluster_capacity_factor=config.cluster_capacity_factor,
        signature_grad=config.signature_grad,
        temperature=config.temperature_start,
    )


def bits_per_char(loss_nats: float) -> float:
    return loss_nats / math.log(2.0)
