"""Deterministic k-means of tile signatures, and the two-level routing tables built from it.

Hierarchical routing first picks a cluster by ``x . cluster_signature`` and then a tile inside it.
The second stage has a fixed width (`capacity`) so that it lowers to static shapes: k-means here
assigns under a capacity limit, and every cluster's member list is padded to `capacity` with a
score bias of -inf that no real member can lose to.

Everything is deterministic: initial centres are picked farthest-first (ties: lowest index), and
every argmin / sort breaks ties by the lowest index, so the same signatures always give the same
clusters on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from geofractal_edge.errors import GfedgeError


@dataclass(frozen=True)
class Hierarchy:
    """The routing tables of 2-level routing (C clusters, M = capacity slots per cluster, d = d_model).

    Members of a cluster are listed in ascending tile index, so the argmax inside a cluster (lowest
    slot wins a tie) also picks the lowest tile index.
    """

    assignments: Tensor  # [n_tiles] int64: the cluster of each tile
    cluster_signatures: Tensor  # [C, d] float32 in {-1, 0, 1}: sign of the members' mean signature
    members: Tensor  # [C, M] int64: tile indices; padding repeats the cluster's first member
    pad: Tensor  # [C, M] float32: 0 for a member, -inf for a padding slot
    member_signatures: Tensor  # [C, M, d] float32: signatures[members], zero rows at padding


def kmeans(points: Tensor, n_clusters: int, *, capacity: int | None = None, iters: int = 30) -> Tensor:
    """Cluster `points` [n, d] into `n_clusters` non-empty groups of at most `capacity`; returns [n] int64.

    Lloyd iterations where the assignment step is greedy under the capacity limit: all (point,
    cluster) pairs in ascending distance, a point takes the first cluster that still has room.
    """
    n = points.shape[0]
    capacity = n if capacity is None else capacity
    if not 1 <= n_clusters <= n:
        raise GfedgeError(f"cannot make {n_clusters} clusters of {n} signatures", "use between 1 and n_tiles clusters")
    if capacity * n_clusters < n:
        raise GfedgeError(f"{n_clusters} clusters of at most {capacity} cannot hold {n} tiles", "raise cluster_capacity_factor")
    x = points.detach().to(torch.float64)
    centres = x[_farthest_first(x, n_clusters)]
    assignments = torch.full((n,), -1, dtype=torch.long)
    for _ in range(iters):
        new = _assign(_sq_distances(x, centres), capacity)
        new = _fill_empty(x, centres, new, n_clusters)
        if torch.equal(new, assignments):
            break
        assignments = new
        centres = torch.stack([x[assignments == k].mean(dim=0) for k in range(n_clusters)])
    return assignments


def build_hierarchy(signatures: Tensor, n_clusters: int, *, capacity: int) -> Hierarchy:
    """k-means `signatures` [n, d] and lay out the routing tables (cluster signature = sign of the member mean)."""
    sigs = signatures.detach().to(torch.float32)
    assignments = kmeans(sigs, n_clusters, capacity=capacity)
    members = torch.zeros(n_clusters, capacity, dtype=torch.long)
    pad = torch.full((n_clusters, capacity), float("-inf"), dtype=torch.float32)
    for k in range(n_clusters):
        tiles = torch.nonzero(assignments == k).flatten()  # ascending
        members[k] = tiles[0]
        members[k, : len(tiles)] = tiles
        pad[k, : len(tiles)] = 0.0
    cluster_signatures, member_signatures = routing_tables(sigs, members, pad)
    return Hierarchy(assignments, cluster_signatures, members, pad, member_signatures)


def routing_tables(signatures: Tensor, members: Tensor, pad: Tensor) -> tuple[Tensor, Tensor]:
    """(cluster_signatures [C, d], member_signatures [C, M, d]) of a clustering, read from the current signatures [n, d].

    A cluster's signature is the sign of its members' mean signature (= sign of their sum); padding
    slots get zero rows. Only the grouping is state: the tables always follow the tiles' weights.
    """
    real = (pad == 0).to(signatures.dtype)[..., None]  # [C, M, 1]
    member_signatures = signatures[members] * real  # [C, M, d]
    return torch.sign(member_signatures.sum(dim=1)), member_signatures


def _sq_distances(x: Tensor, centres: Tensor) -> Tensor:
    """[n, d], [C, d] -> [n, C] squared Euclidean distances, computed elementwise (no cancellation)."""
    return ((x[:, None, :] - centres[None, :, :]) ** 2).sum(dim=-1)


def _farthest_first(x: Tensor, k: int) -> list[int]:
    """k starting centres: the point nearest the mean, then repeatedly the point farthest from those chosen."""
    chosen = [int(torch.argmin(((x - x.mean(dim=0)) ** 2).sum(dim=1)))]
    nearest = ((x - x[chosen[0]]) ** 2).sum(dim=1)
    for _ in range(1, k):
        nearest_masked = nearest.clone()
        nearest_masked[chosen] = -1.0  # a duplicate of a chosen point may be picked, a chosen one never
        nxt = int(torch.argmax(nearest_masked))
        chosen.append(nxt)
        nearest = torch.minimum(nearest, ((x - x[nxt]) ** 2).sum(dim=1))
    return chosen


def _assign(dist: Tensor, capacity: int) -> Tensor:
    """Greedy capacity-limited assignment: pairs in ascending (distance, point, cluster) order."""
    n, c = dist.shape
    order = torch.argsort(dist.flatten(), stable=True).tolist()  # ties keep row-major (point, cluster) order
    assignments = [-1] * n
    room = [capacity] * c
    left = n
    for flat in order:
        point, cluster = divmod(flat, c)
        if assignments[point] < 0 and room[cluster] > 0:
            assignments[point] = cluster
            room[cluster] -= 1
            left -= 1
            if left == 0:
                break
    return torch.tensor(assignments, dtype=torch.long)


def _fill_empty(x: Tensor, centres: Tensor, assignments: Tensor, n_clusters: int) -> Tensor:
    """Give each empty cluster the point farthest from its own centre, taken from a cluster with >1 points."""
    assignments = assignments.clone()
    for k in range(n_clusters):
        if bool((assignments == k).any()):
            continue
        counts = torch.bincount(assignments, minlength=n_clusters)
        own = ((x - centres[assignments]) ** 2).sum(dim=1)
        own[counts[assignments] <= 1] = -1.0
        assignments[int(torch.argmax(own))] = k
    return assignments
