"""Routing-aware parity: compare discrete routing decisions separately from numbers.

An argmax route turns 1e-4 of numeric noise into another tile and a large output difference, so an
averaged output error is meaningless for routed models. Here each routed layer's decisions are
compared one by one; every disagreement is listed with torch's margin (top-1 minus top-2 score),
flagged as a near-tie when that margin is small against the layer's typical margin, and the output
error is measured only on the rows whose routes all agree.

Route outputs (role "routes") have the layer (or router) on axis 0, then the token axes that the
primary output also has, then optional extra axes (slots, top-K) that must all agree.
Margins (role "margins") have the routes' layout without the top-K axis.
"""

from __future__ import annotations

import numpy as np

MAX_LISTED = 50


def route_agreement(torch_routes: list[np.ndarray], runtime_routes: list[np.ndarray], torch_margins: list[np.ndarray] | None,
                    *, token_ndim: int, near_tie_rel: float, case_names: list[str]) -> tuple[dict, list[np.ndarray]]:
    """Per-layer agreement over all cases, the disagreements, and per-case row masks (all layers agree)."""
    layers = torch_routes[0].shape[0]
    agree_counts = np.zeros(layers)
    totals = np.zeros(layers)
    masks, listed = [], []
    typical = _typical_margins(torch_margins, layers) if torch_margins else None
    n_disagree = n_near = 0
    for index, (want, got) in enumerate(zip(torch_routes, runtime_routes)):
        same = want == got  # [L, *tokens, *extra]
        per_decision = same.reshape(*same.shape[: 1 + token_ndim], -1).all(axis=-1) if same.ndim > 1 + token_ndim else same
        agree_counts += per_decision.reshape(layers, -1).sum(axis=1)
        totals += per_decision.reshape(layers, -1).shape[1]
        masks.append(per_decision.all(axis=0))  # [*tokens]: every layer agrees
        for position in np.argwhere(~per_decision):
            layer, where = int(position[0]), tuple(int(p) for p in position[1:])
            margin = float(torch_margins[index][(layer, *where)]) if torch_margins else float("nan")
            near = bool(typical is not None and margin <= near_tie_rel * typical[layer])
            n_disagree += 1
            n_near += near
            if len(listed) < MAX_LISTED:
                listed.append({"case": case_names[index], "layer": layer, "at": list(where), "torch": _value(want[(layer, *where)]),
                               "runtime": _value(got[(layer, *where)]), "torch_margin": margin, "near_tie": near})
    per_layer = (agree_counts / np.maximum(totals, 1)).tolist()
    summary = {"min": min(per_layer), "per_layer": per_layer, "decisions": int(totals.sum()), "disagreements": n_disagree,
               "near_ties": n_near, "listed": listed, "near_tie_rel": near_tie_rel}
    return summary, masks


def _typical_margins(margins: list[np.ndarray], layers: int) -> np.ndarray:
    stacked = np.concatenate([m.reshape(layers, -1) for m in margins], axis=1)
    return np.median(np.abs(stacked), axis=1)


def _value(array) -> int | list[int]:
    return array.tolist() if isinstance(array, np.ndarray) else int(array)
