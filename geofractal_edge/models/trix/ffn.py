"""TrixFFN: a drop-in transformer FFN made of n ternary tiles, routed by signatures read from their weights.

Tile t is ``y = down_t(gelu(up_t(x)))`` with ``up_t`` [d_hidden, d_model] and ``down_t`` [d_model,
d_hidden] ternary x one scale each (see `ternary`). Its signature is
``sign(sum_h q_up[t, h, :])``: each input feature gets +1, -1 or 0 by the net vote of the tile's
hidden units. The routing score of token x for tile t is ``x . signature_t``; there are no router
parameters (the module's only parameters are `up` and `down`).

* Inference (eval mode): hard argmax, only the winning tile computes. Ties go to the LOWEST index
  (torch.argmax and ONNX ArgMax with select_last_index=0 both return the first maximum); in
  hierarchical routing that holds at both stages, and members are listed in ascending tile order.
* Training: every tile computes and the outputs are mixed by a softmax over
  ``score / (sqrt(d_model) * temperature)``; the trainer anneals `temperature` towards the hard
  argmax and adds `aux_loss` (a Switch-style load-balancing term) to its loss.
* Hierarchical routing: a cluster by ``x . cluster_signature``, then a tile among the cluster's
  members: about 2 sqrt(n) dot products per token instead of n. Only the grouping (which tiles
  form a cluster) is state, in buffers that `rebuild_hierarchy()` recomputes by k-means; cluster
  signatures (sign of the members' mean) and member signatures are always re-read from the weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.trix.cluster import build_hierarchy, routing_tables
from geofractal_edge.models.trix.config import ROUTINGS, cluster_capacity, default_clusters
from geofractal_edge.models.trix.ternary import ste_ternary


class TrixFFN(nn.Module):
    """n ternary tiles d_model -> d_hidden -> d_model behind a signature router. forward: [..., d] -> [..., d]."""

    def __init__(
        self,
        d_model: int,
        d_hidden: int,
        n_tiles: int,
        *,
        routing: str = "flat",
        n_clusters: int = 0,
        cluster_capacity_factor: float = 1.25,
        signature_grad: bool = False,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if routing not in ROUTINGS:
            raise GfedgeError(f"unknown TriX routing '{routing}'", f"use one of: {', '.join(ROUTINGS)}")
        self.d_model, self.d_hidden, self.n_tiles = d_model, d_hidden, n_tiles
        self.routing = routing
        self.signature_grad = signature_grad
        self.temperature = temperature  # set by the trainer; only the soft (training) path reads it
        # nn.Linear's default init, one tile at a time
        self.up = nn.Parameter(torch.empty(n_tiles, d_hidden, d_model).uniform_(-1.0, 1.0) / math.sqrt(d_model))
        self.down = nn.Parameter(torch.empty(n_tiles, d_model, d_hidden).uniform_(-1.0, 1.0) / math.sqrt(d_hidden))
        self.register_buffer("usage", torch.zeros(n_tiles, dtype=torch.long), persistent=False)
        self.aux_loss: Tensor | None = None  # load-balancing term of the last training forward
        self.route_margin = 0.0  # set by the trainer; > 0 makes the soft path compute `margin_loss`
        self.margin_loss: Tensor | None = None  # mean hinge on the top-1 minus top-2 routing score
        if routing == "hierarchical":
            self.n_clusters = n_clusters or default_clusters(n_tiles)
            self.capacity = cluster_capacity(n_tiles, self.n_clusters, cluster_capacity_factor)
            c, m = self.n_clusters, self.capacity
            # Only the grouping is state; cluster and member signatures are re-read from the weights.
            self.register_buffer("cluster_assignments", torch.zeros(n_tiles, dtype=torch.long))  # [n]
            self.register_buffer("cluster_members", torch.zeros(c, m, dtype=torch.long))  # [C, M]
            self.register_buffer("cluster_pad", torch.zeros(c, m))  # [C, M], 0 or -inf
            self.rebuild_hierarchy()

    # ---- weights and signatures -------------------------------------------------------------

    @torch.no_grad()
    def tile_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Exact deployed weights: (up_q [n, h, d], up_scale [n], down_q [n, d, h], down_scale [n]); codes as float {-1, 0, 1}."""
        _, up_q, up_scale = ste_ternary(self.up.detach())
        _, down_q, down_scale = ste_ternary(self.down.detach())
        return up_q, up_scale, down_q, down_scale

    @torch.no_grad()
    def signatures(self) -> Tensor:
        """[n_tiles, d_model] float in {-1, 0, 1}: sign of each tile's ternary up weights summed over its hidden units."""
        return signatures_from_codes(self.tile_weights()[0])

    def _training_signatures(self, exact: Tensor, up_scale: Tensor) -> Tensor:
        """The exact signatures in value; with `signature_grad`, a straight-through gradient to `up`."""
        if not self.signature_grad:
            return exact
        vote = self.up.sum(dim=1) / (up_scale[:, None] * math.sqrt(self.d_hidden))  # [n, d], the continuous net vote
        return vote + (exact - vote).detach()

    @torch.no_grad()
    def rebuild_hierarchy(self) -> None:
        """Re-cluster the current signatures (hierarchical routing only; deterministic)."""
        if self.routing != "hierarchical":
            return
        tables = build_hierarchy(self.signatures(), self.n_clusters, capacity=self.capacity)
        self.cluster_assignments.copy_(tables.assignments)
        self.cluster_members.copy_(tables.members)
        self.cluster_pad.copy_(tables.pad)

    @torch.no_grad()
    def hierarchy_tables(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(cluster_signatures [C, d], member_signatures [C, M, d], members [C, M], pad [C, M]) from the current weights."""
        cluster_sigs, member_sigs = routing_tables(self.signatures(), self.cluster_members, self.cluster_pad)
        return cluster_sigs, member_sigs, self.cluster_members, self.cluster_pad

    # ---- routing ------------------------------------------------------------------------------

    @torch.no_grad()
    def route(self, x: Tensor) -> Tensor:
        """[..., d] -> [...] int64: the hard route (flat or hierarchical argmax, ties to the lowest index)."""
        return self.routes(x, margins=False)[0]

    @torch.no_grad()
    def routes(self, x: Tensor, *, margins: bool = True) -> tuple[Tensor, Tensor | None]:
        """[..., d] -> (route [...] int64, margin [...] float32 or None).

        The margin is top1 - top2 of the scores the decision was made on; hierarchical: the smaller of
        the cluster-stage and the tile-stage margins. +inf where a stage has a single candidate.
        A margin near 0 marks a route that rounding noise may flip.
        """
        lead = x.shape[:-1]
        flat_x = x.reshape(-1, self.d_model).float()
        if self.routing == "flat":
            route, margin = flat_route(flat_x, self.signatures(), margins=margins)
        else:
            route, margin = hierarchical_route(flat_x, *self.hierarchy_tables(), margins=margins)
        return route.reshape(lead), None if margin is None else margin.reshape(lead)

    @torch.no_grad()
    def reset_usage(self) -> None:
        self.usage.zero_()

    # ---- forward ------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """[..., d] -> [..., d]: soft mixture in training mode, hard routing in eval mode."""
        if self.training:
            return self._forward_soft(x)
        return self.forward_hard(x)

    @torch.no_grad()
    def forward_hard(self, x: Tensor, route: Tensor | None = None) -> Tensor:
        """Hard routing: each token runs only its tile (exact ternary weights x scale). `route` [...] may be given."""
        lead = x.shape[:-1]
        flat_x = x.reshape(-1, self.d_model)
        route = self.route(flat_x) if route is None else route.reshape(-1)
        up_q, up_scale, down_q, down_scale = self.tile_weights()
        y = torch.zeros_like(flat_x)
        for t in torch.unique(route).tolist():
            index = torch.nonzero(route == t).flatten()
            y[index] = run_tile(flat_x[index], up_q[t], up_scale[t], down_q[t], down_scale[t])
        self.usage += torch.bincount(route, minlength=self.n_tiles)
        return y.reshape(*lead, self.d_model)

    def _forward_soft(self, x: Tensor) -> Tensor:
        """All tiles compute; outputs mixed by the routing softmax. Sets `aux_loss`."""
        lead = x.shape[:-1]
        flat_x = x.reshape(-1, self.d_model)  # [N, d]
        n, h, d = self.n_tiles, self.d_hidden, self.d_model
        up_hat, up_q, up_scale = ste_ternary(self.up)  # [n, h, d]
        down_hat, _, _ = ste_ternary(self.down)  # [n, d, h]
        exact_sigs = signatures_from_codes(up_q)
        probs = self._soft_probs(flat_x, self._training_signatures(exact_sigs, up_scale), exact_sigs)  # [N, n]
        hidden = F.gelu(flat_x @ up_hat.reshape(n * h, d).T)  # [N, n*h]
        # sum_t p_t * down_t(hidden_t) == (p repeated over each tile's h units * hidden) @ stacked down: one GEMM
        mixed = hidden * probs.repeat_interleave(h, dim=1)  # [N, n*h]
        y = mixed @ down_hat.transpose(1, 2).reshape(n * h, d)  # [N, d]
        with torch.no_grad():
            chosen = probs.argmax(dim=1)
            self.usage += torch.bincount(chosen, minlength=n)
        fraction = torch.bincount(chosen, minlength=n).to(probs.dtype) / chosen.numel()  # [n], no gradient
        self.aux_loss = n * (fraction * probs.mean(dim=0)).sum()
        if self.route_margin > 0:
            top = torch.topk(flat_x @ exact_sigs.T, 2, dim=1).values / math.sqrt(d)  # [N, 2]; gradient into x only
            self.margin_loss = torch.relu(self.route_margin - (top[:, 0] - top[:, 1])).mean()
        return y.reshape(*lead, d)

    def _soft_probs(self, x: Tensor, sigs: Tensor, exact_sigs: Tensor) -> Tensor:
        """[N, d] -> [N, n] routing probabilities; hierarchical: p(cluster) * p(tile | cluster)."""
        scale = 1.0 / (math.sqrt(self.d_model) * self.temperature)
        logits = (x @ sigs.T) * scale  # [N, n]
        if self.routing == "flat":
            return torch.softmax(logits, dim=1)
        cluster_sigs = routing_tables(exact_sigs, self.cluster_members, self.cluster_pad)[0]  # [C, d], no gradient
        cluster_log_p = torch.log_softmax((x @ cluster_sigs.T) * scale, dim=1)  # [N, C]
        owner = self.cluster_assignments  # [n]
        member_mask = torch.where(owner[None, :] == torch.arange(self.n_clusters, device=x.device)[:, None], 0.0, float("-inf"))  # [C, n]
        within_lse = torch.logsumexp(logits[:, None, :] + member_mask[None], dim=2)  # [N, C]
        log_p = cluster_log_p[:, owner] + logits - within_lse[:, owner]  # [N, n]
        return log_p.exp()


def signatures_from_codes(up_q: Tensor) -> Tensor:
    """[n, h, d] ternary codes -> [n, d] signatures in {-1, 0, 1} (integer sums: exact in any order)."""
    return torch.sign(up_q.sum(dim=1))


def run_tile(x: Tensor, up_q: Tensor, up_scale: Tensor, down_q: Tensor, down_scale: Tensor) -> Tensor:
    """One tile on tokens [N, d]: scales are applied after each ternary matmul, as every lowering does."""
    hidden = F.gelu((x @ up_q.T) * up_scale)  # [N, h]
    return (hidden @ down_q.T) * down_scale  # [N, d]


def flat_route(x: Tensor, signatures: Tensor, *, margins: bool = False) -> tuple[Tensor, Tensor | None]:
    """[N, d], [n, d] -> (argmax_t x . sig_t [N] int64, top1 - top2 margin [N] or None): n dot products per token."""
    scores = x @ signatures.T  # [N, n]
    route = scores.argmax(dim=1)
    return route, (_margin(scores) if margins else None)


def hierarchical_route(
    x: Tensor,
    cluster_signatures: Tensor,
    member_signatures: Tensor,
    members: Tensor,
    pad: Tensor,
    *,
    margins: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Two argmax stages: cluster, then tile within it. x [N, d]; tables as in `cluster.Hierarchy`.

    Tokens are grouped by cluster and each group is scored against only its cluster's member
    signatures in one batched matmul, so a token costs C + M dot products instead of n when the
    clusters get similar numbers of tokens (every group is padded to the fullest one's count W: the
    second stage costs C * W * M dot products). The grouping has data-dependent sizes, which is
    fine in eager torch; the lowerings use a static-shape gather instead.
    """
    n_clusters, capacity = members.shape
    cluster_scores = x @ cluster_signatures.T  # [N, C]
    cluster = cluster_scores.argmax(dim=1)  # [N]
    # A token's slot: its cluster's block of W rows, then its rank among that cluster's tokens (a running count, no sort).
    running = torch.zeros(len(x), n_clusters, dtype=torch.int32, device=x.device).scatter_(1, cluster[:, None], 1).cumsum_(dim=0)  # [N, C]
    width = int(running[-1].max()) if len(x) else 0  # W: tokens in the fullest cluster
    slot = running.gather(1, cluster[:, None]).squeeze(1).long().add_(cluster, alpha=width).sub_(1)  # [N], distinct rows of [C*W]
    grouped = x.new_empty(n_clusters * width, x.shape[1]).index_copy_(0, slot, x)  # [C*W, d]; padding rows are never read
    scores = torch.baddbmm(pad[:, None, :], grouped.view(n_clusters, width, -1), member_signatures.transpose(1, 2))  # [C, W, M]
    scores = scores.view(n_clusters * width, capacity).index_select(0, slot)  # [N, M]: each token's own row
    route = members[cluster, scores.argmax(dim=1)]
    if not margins:
        return route, None
    return route, torch.minimum(_margin(cluster_scores), _margin(scores))


def _margin(scores: Tensor) -> Tensor:
    """[N, k] -> [N]: top1 - top2 (+inf when k == 1 or the runner-up is padding)."""
    if scores.shape[1] < 2:
        return torch.full(scores.shape[:1], float("inf"), dtype=scores.dtype, device=scores.device)
    top = torch.topk(scores, 2, dim=1).values
    return top[:, 0] - top[:, 1]
