"""Ternary weights {-1, 0, +1} x one scale per tile, and the straight-through quantiser that trains them.

A tile's float ("latent") weights W are trained; the forward pass sees ``scale * q`` with
``scale = mean(|W|)`` over the tile (absmean, as in BitNet b1.58) and ``q = clamp(round(W / scale),
-1, 1)``. The backward pass treats the quantiser as the identity (straight-through estimator), so
the latent weights keep receiving gradients while every forward already runs the deployed weights.

Tensors here hold a stack of tiles: dimension 0 is the tile, the scale is one number per tile.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-6  # floor of a tile's scale, so that an all-zero tile quantises to zeros instead of NaN


def tile_scale(w: Tensor) -> Tensor:
    """[n_tiles, ...] -> [n_tiles]: mean |w| over each tile, at least EPS."""
    return w.detach().abs().flatten(1).mean(dim=1).clamp_min(EPS)


def ternarize(w: Tensor, scale: Tensor) -> Tensor:
    """The ternary codes {-1, 0, 1} of `w` (same dtype as `w`) under per-tile `scale` [n_tiles]."""
    return torch.clamp(torch.round(w / _expand(scale, w)), -1.0, 1.0)


def ste_ternary(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(w_hat, q, scale): w_hat = q * scale in the forward pass, identity gradient to `w`.

    `q` and `scale` carry no gradient. Outside autograd (`torch.no_grad` or a `w` that needs no grad)
    `w_hat` is exactly ``q * scale``; inside, ``w + (q * scale - w).detach()`` can differ from it in
    the last bit, which only training sees.
    """
    scale = tile_scale(w)
    q = ternarize(w.detach(), scale)
    exact = q * _expand(scale, q)
    if not (torch.is_grad_enabled() and w.requires_grad):
        return exact, q, scale
    return w + (exact - w).detach(), q, scale


@torch.no_grad()
def ternary_weights(w: Tensor) -> tuple[Tensor, Tensor]:
    """The deployable form of latent weights `w` [n_tiles, ...]: (codes int8 in {-1, 0, 1}, scale float32 [n_tiles])."""
    scale = tile_scale(w.float())
    return ternarize(w.float(), scale).to(torch.int8), scale.to(torch.float32)


def _expand(scale: Tensor, like: Tensor) -> Tensor:
    """[n_tiles] -> [n_tiles, 1, ..., 1] to broadcast against `like`."""
    return scale.reshape(-1, *([1] * (like.dim() - 1)))
