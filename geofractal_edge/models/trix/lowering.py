"""Export-friendly forms of hard-routed TriX, and the LM wrapper the exporter traces.

Hard routing picks one tile per token, and "run only that tile" has data-dependent shapes. Four
lowerings (two with static shapes, two with data-dependent sizes) compute the same function as `TrixFFN`'s hard path
(the same routes, outputs equal up to float rounding) for a dynamic number of tokens N. Scores are computed by other matmul
shapes than torch's eager path, so a route can only differ where two scores are within rounding of
each other: the margin output marks those tokens.

* ``compute_all_select``: every tile runs on every token, and the output is selected by a one-hot
  of the argmax (a multiply by 0/1 and a sum: exact). n x the FLOPs, no gathers: the better choice
  for few tiles or tiny batches.
* ``gather_by_route``: each token's tile weights are gathered by its route index (Gather with fixed
  trailing shapes), then one batched matmul per projection. Weight traffic per token, FLOPs of one
  tile: it copies N x (2 h d) weights per layer (268 MB per projection's gather at 1,024 tokens of 256 x
  256 tiles; 4.3 GB per gather at 256 x 64 tokens), so it suits small tiles only.
* ``group_by_route``: the tokens move instead of the weights. Each token gets a slot in its tile's
  row block ([n, W, d], W = the fullest tile's token count, a data-dependent size), every tile runs
  one matmul on its block with its weights in place, and each token reads its own slot back. FLOPs
  of n x W tokens (>= N; padding rows are computed and never read); activations [n, W, h], no
  weight copies. The tile weights stay the left operand of a [n, *, *] MatMul, so the 2-bit
  lowering makes one MatMulNBits per tile. Measured on 64 tiles of 256 x 256 whose routing had
  collapsed onto a few tiles (fullest 35-38% of tokens; benchmarks/trix_wide.py, 1 thread, fp32
  bundles): 3x less RSS after warm-up than gather_by_route (202 vs 597 MiB) and exportable at the
  spec's max batch, but slower: p50 x7.1 at 64 tokens, x1.5 at 1,024 (W x n padded rows, and
  onnxruntime's 2-bit MatMulNBits costs ~1 ms per tile call). Not chosen by any target profile.
* ``dispatch_by_route``: group_by_route without the padding. Each tile takes exactly its own tokens
  (NonZero of ``route == t``, a data-dependent count per tile), runs its two matmuls on them with its
  weights in place, and one scatter puts every token's row back. FLOPs of one tile per token, no
  padding rows, activations [N, h] and no weight copies. Each tile's weights are read by a constant
  index, transposed (``x_t @ up_q[t].T``: a Gather of the [n, h, d] tensor and a Transpose, which the
  2-bit lowering turns into one MatMulNBits per tile with no transposes left), so the graph has 2 x n
  matmuls per layer. onnxruntime's exact 2-bit kernel
  dequantizes its tile on every call (~0.2 ms for 256 x 256 on this host); the lookup-table kernel
  (``mlas.use_lut_gemm``, int8 activations; asked for by int8 and int4 bundles of this lowering, kept
  where export measures it faster, and run only for tiles whose N is a multiple of 128 and K of 32) does not. Chosen on onnxruntime targets
  above ``compute_all_max_tiles`` (models/trix/family.py). torch's exporter writes six index nodes per tile
  (Equal, NonZero, Transpose, Squeeze, Reshape, Gather); the 2-bit lowering replaces them with one sort and one
  Split per layer and hoists the tile scales and GELU out of the tiles (export/dispatch.py), leaving two
  MatMulNBits per tile: each onnxruntime node costs the session memory of its own.

Routing in every lowering: flat ``argmax(x . signature)``, or hierarchical as two argmax stages (cluster,
then the cluster's member slots; the member list has a fixed width, padded slots score -inf).
Ties go to the lowest index at every stage, like torch.argmax and ONNX ArgMax(select_last_index=0).

Tensor names in `ExportableTrixLM` (buffers, hence ONNX initializers), per layer i; n tiles,
h = d_hidden, d = d_model, C clusters, M = cluster capacity:

* ``blocks.{i}.ffn.up_q``      float32 [n, h, d], values exactly -1, 0, +1 (int8-valued)
* ``blocks.{i}.ffn.up_scale``  float32 [n]: tile t's up weight is ``up_q[t] * up_scale[t]``
* ``blocks.{i}.ffn.down_q``    float32 [n, d, h], values exactly -1, 0, +1
* ``blocks.{i}.ffn.down_scale`` float32 [n]
* ``blocks.{i}.ffn.signatures`` float32 [n, d] in {-1, 0, 1}, = sign(up_q.sum(1)) (derived; kept
  as its own tensor so packing up_q does not change routing). Flat routing only: a hierarchical
  graph does not read it, so the ONNX export leaves it out.
* hierarchical only: ``blocks.{i}.ffn.cluster_signatures`` float32 [C, d],
  ``blocks.{i}.ffn.cluster_member_signatures`` float32 [C, M, d] (zero rows at padding),
  ``blocks.{i}.ffn.cluster_members`` int64 [C, M], ``blocks.{i}.ffn.cluster_pad`` float32 [C, M]
  (0 or -inf).

Every weight enters the graph untransformed (as the left operand of a MatMul or the data of a
Gather), so the ONNX initializers keep exactly these names (checked by the unit tests) and a later
pass can swap them for packed or INT4 forms by name. The scales are applied to matmul outputs,
never folded into the codes. One caveat: the exporter's optimiser merges initializers with equal
contents, so two layers whose small routing tables happen to be equal (cluster_pad, say) share
the first layer's name.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.trix.ffn import TrixFFN
from geofractal_edge.models.trix.lm import TrixLM

LOWERINGS = ("compute_all_select", "gather_by_route", "group_by_route", "dispatch_by_route")


class LoweredTrixFFN(nn.Module):
    """A frozen, hard-routed copy of a TrixFFN: forward(x [N, d]) -> (y [N, d], route [N] int64, margin [N] float32)."""

    def __init__(self, ffn: TrixFFN) -> None:
        super().__init__()
        up_q, up_scale, down_q, down_scale = ffn.tile_weights()
        self.n_tiles, self.routing = ffn.n_tiles, ffn.routing
        self.register_buffer("up_q", up_q.float().contiguous())
        self.register_buffer("up_scale", up_scale.float().contiguous())
        self.register_buffer("down_q", down_q.float().contiguous())
        self.register_buffer("down_scale", down_scale.float().contiguous())
        self.register_buffer("signatures", ffn.signatures().float().contiguous())
        if self.routing == "hierarchical":
            cluster_sigs, member_sigs, members, pad = ffn.hierarchy_tables()
            self.register_buffer("cluster_signatures", cluster_sigs.float().contiguous())
            self.register_buffer("cluster_member_signatures", member_sigs.float().contiguous())
            self.register_buffer("cluster_members", members.long().contiguous())
            self.register_buffer("cluster_pad", pad.float().contiguous())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        route, margin = self.route(x)
        return self.tiles(x, route), route, margin

    def route(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """[N, d] -> (route [N] int64, margin [N]); margins as in `TrixFFN.routes`."""
        # Score tables are the left MatMul operand (sig @ x^T) so that they enter the graph untransposed.
        if self.routing == "flat":
            scores = (self.signatures @ x.T).T  # [N, n]
            return scores.argmax(dim=1), _margin(scores)
        cluster_scores = (self.cluster_signatures @ x.T).T  # [N, C]
        cluster = cluster_scores.argmax(dim=1)  # [N]
        member_sigs = self.cluster_member_signatures.index_select(0, cluster)  # [N, M, d]
        scores = (member_sigs @ x.unsqueeze(2)).squeeze(2) + self.cluster_pad.index_select(0, cluster)  # [N, M]
        members = self.cluster_members.index_select(0, cluster)  # [N, M]
        route = members.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1)  # [N]
        return route, torch.minimum(_margin(cluster_scores), _margin(scores))

    def tiles(self, x: Tensor, route: Tensor) -> Tensor:
        raise NotImplementedError


class ComputeAllSelectFFN(LoweredTrixFFN):
    """Every tile on every token, then a one-hot select. Activations are kept tile-major so weights stay untransposed."""

    def tiles(self, x: Tensor, route: Tensor) -> Tensor:
        pre = self.up_q @ x.T  # [n, h, N]
        hidden = F.gelu(pre.transpose(0, 2) * self.up_scale).transpose(0, 2)  # scale broadcasts over the last (tile) axis
        out = self.down_q @ hidden  # [n, d, N]
        tile_ids = torch.arange(self.n_tiles, device=x.device)
        select = (route[:, None] == tile_ids[None, :]).to(x.dtype) * self.down_scale  # [N, n]: one-hot x the winner's scale
        return (out.permute(2, 1, 0) * select[:, None, :]).sum(dim=2)  # [N, d]; adding exact zeros


class GatherByRouteFFN(LoweredTrixFFN):
    """Each token gathers its own tile's weights ([N, h, d] and [N, d, h]) and runs a batched matmul."""

    def tiles(self, x: Tensor, route: Tensor) -> Tensor:
        up = self.up_q.index_select(0, route)  # [N, h, d]
        hidden = F.gelu((up @ x.unsqueeze(2)).squeeze(2) * self.up_scale.index_select(0, route).unsqueeze(1))  # [N, h]
        down = self.down_q.index_select(0, route)  # [N, d, h]
        return (down @ hidden.unsqueeze(2)).squeeze(2) * self.down_scale.index_select(0, route).unsqueeze(1)  # [N, d]


class GroupByRouteFFN(LoweredTrixFFN):
    """Tokens grouped into per-tile row blocks [n, W, d] by their route; each tile one matmul on its block."""

    def tiles(self, x: Tensor, route: Tensor) -> Tensor:
        n, d = self.n_tiles, x.shape[1]
        onehot = (route[:, None] == torch.arange(n, device=x.device)[None, :]).to(torch.int64)  # [N, n]
        running = onehot.cumsum(dim=0)  # [N, n]: tokens routed to each tile so far
        rank = (running * onehot).sum(dim=1) - 1  # [N]: a token's rank among its tile's tokens
        width = running[-1].max().item()  # W: the fullest tile's token count (data-dependent)
        torch._check(width >= 1)
        torch._check(width <= x.shape[0])
        slot = route * width + rank  # [N], distinct rows of [n*W]
        grouped = x.new_zeros(n * width, d).index_copy(0, slot, x).view(n, width, d)  # [n, W, d]; padding rows stay 0
        hidden = F.gelu((self.up_q @ grouped.transpose(1, 2)) * self.up_scale[:, None, None])  # [n, h, W]
        out = (self.down_q @ hidden) * self.down_scale[:, None, None]  # [n, d, W]
        return out.transpose(1, 2).reshape(n * width, d).index_select(0, slot)  # [N, d]: each token's own slot


class DispatchByRouteFFN(LoweredTrixFFN):
    """Each tile runs on exactly the tokens routed to it; one scatter returns the rows to token order."""

    def tiles(self, x: Tensor, route: Tensor) -> Tensor:
        rows, outs = [], []
        for t in range(self.n_tiles):
            idx = (route == t).nonzero().squeeze(1)  # [N_t]: this tile's tokens (data-dependent count, may be 0)
            hidden = F.gelu((x.index_select(0, idx) @ self.up_q[t].T) * self.up_scale[t])  # [N_t, h]
            outs.append((hidden @ self.down_q[t].T) * self.down_scale[t])  # [N_t, d]
            rows.append(idx)
        return x.new_zeros(x.shape).index_copy(0, torch.cat(rows), torch.cat(outs))  # every token is in exactly one tile


_LOWERED = {"compute_all_select": ComputeAllSelectFFN, "gather_by_route": GatherByRouteFFN, "group_by_route": GroupByRouteFFN,
            "dispatch_by_route": DispatchByRouteFFN}


def lower_ffn(ffn: TrixFFN, lowering: str) -> LoweredTrixFFN:
    """A static-shape copy of `ffn` (its current weights and clusters) under the named lowering."""
    if lowering in _LOWERED:
        return _LOWERED[lowering](ffn)
    raise GfedgeError(f"unknown TriX lowering '{lowering}'", f"use one of: {', '.join(LOWERINGS)}")


class ExportableTrixLM(nn.Module):
    """tokens int64 [B, T] -> (logits [B, T, V], routes [L, B, T] int64, margins [L, B, T] float32).

    A frozen copy of a trained TrixLM with each FFN replaced by a lowering; B and T may be dynamic
    (T <= context). The routes are the exported graph's own decisions, so parity can compare them
    with `TrixLM.forward_with_routes` separately from the logits.
    """

    def __init__(self, model: TrixLM, *, lowering: str = "gather_by_route") -> None:
        super().__init__()
        if model.ffn_kind != "trix":
            raise GfedgeError("only a TriX model can be lowered", "train it with ffn='trix'")
        self.lowering = lowering
        self.tok_emb, self.norm_out, self.head = (copy.deepcopy(m) for m in (model.tok_emb, model.norm_out, model.head))
        self.pos_emb = nn.Parameter(model.pos_emb.detach().clone())
        self.blocks = nn.ModuleList(_LoweredBlock(block, lowering) for block in model.blocks)
        self.requires_grad_(False)
        self.eval()

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t = tokens.shape
        x = self.tok_emb(tokens) + self.pos_emb[:t]  # [B, T, d]
        routes, margins = [], []
        for block in self.blocks:
            x, route, margin = block(x)
            routes.append(route.reshape(b, t))
            margins.append(margin.reshape(b, t))
        return self.head(self.norm_out(x)), torch.stack(routes), torch.stack(margins)


class _LoweredBlock(nn.Module):
    """A pre-norm block whose FFN runs on the flattened tokens [B*T, d]."""

    def __init__(self, block: nn.Module, lowering: str) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2 = (copy.deepcopy(m) for m in (block.norm1, block.attn, block.norm2))
        self.ffn = lower_ffn(block.ffn, lowering)  # copies the tiles' current ternary weights

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = x + self.attn(self.norm1(x))
        b, t, d = x.shape
        y, route, margin = self.ffn(self.norm2(x).reshape(b * t, d))
        return x + y.reshape(b, t, d), route, margin


def _margin(scores: Tensor) -> Tensor:
    """[N, k] -> [N]: top1 - top2 (+inf when k == 1; a padded runner-up gives +inf too)."""
    if scores.shape[1] < 2:
        return torch.full_like(scores[:, 0], float("inf"))
    top = torch.topk(scores, 2, dim=1).values
    return top[:, 0] - top[:, 1]
