"""Which model serves a request, and which resident model leaves: sage, lru, always-best.

Every policy sees the same `View` of each candidate and answers two questions through one
interface: `rank(views)` orders the candidates for a request (the zoo tries them in that order,
so a model that fails hands the request to the next), and `evict_order(views)` orders evictable
resident models, first to leave first.

Sage (seed 002): permission = expertise x cheapness x persistence, with
  expertise   = trust of the model in this request's context,
  cheapness   = 1 / (1 + cost), cost = 0 when resident, otherwise the swap cost (measured load
                seconds / swap_scale_s + expected resident bytes / budget), and BLOCKED when it
                cannot fit even after evicting every unpinned model; in the low-power state cost is multiplied by `low_power_factor` and
                every model, resident or not, also pays its size relative to the largest candidate,
  persistence = `persistence` (default 1.2) for a resident model, else 1.
If the winner's trust is below `trust_threshold`, the best-trusted alternative goes first instead.
Eviction: lowest permission for the recent demand (expertise averaged over the recent contexts),
ties broken least recently used.

LRU and always-best are the baselines: LRU keeps using whatever resident candidate it used last
(loading the best-trusted one only on a miss) and evicts the least recently used; always-best takes
the highest trust whatever it costs and evicts the least recently used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from geofractal_edge.errors import GfedgeError

BLOCKED = 10.0  # the seed's cost of a swap the budget cannot take


@dataclass(frozen=True)
class View:
    id: str
    expertise: float  # trust for this request's context (eviction: for the recent demand)
    resident: bool
    swap_cost: float = 0.0  # load seconds / swap scale + bytes / budget: what loading it would cost now
    fits: bool = True  # can become resident by evicting unpinned models
    bytes: int = 0  # expected resident bytes
    last_used: float = 0.0


@dataclass(frozen=True)
class Ranking:
    order: list[str]
    scores: dict[str, float] = field(default_factory=dict)
    fallback_from: str | None = None  # sage: the winner passed over for low trust


class Sage:
    name = "sage"

    def __init__(self, *, persistence: float = 1.2, trust_threshold: float = 0.3, low_power_factor: float = 4.0) -> None:
        self.persistence = persistence
        self.trust_threshold = trust_threshold
        self.low_power_factor = low_power_factor

    def permission(self, view: View, *, low_power: bool = False, largest: int = 0) -> float:
        cost = 0.0 if view.resident else (view.swap_cost if view.fits else BLOCKED)
        if low_power:
            cost = self.low_power_factor * (cost + (view.bytes / largest if largest else 0.0))
        persistence = self.persistence if view.resident else 1.0
        return view.expertise * (1.0 / (1.0 + cost)) * persistence

    def rank(self, views: Sequence[View], *, low_power: bool = False) -> Ranking:
        largest = max((v.bytes for v in views), default=0)
        scores = {v.id: self.permission(v, low_power=low_power, largest=largest) for v in views}
        order = sorted(scores, key=lambda i: -scores[i])
        trust = {v.id: v.expertise for v in views}
        winner = order[0]
        fallback_from = None
        if trust[winner] < self.trust_threshold and len(order) > 1:
            alternative = max(order[1:], key=lambda i: trust[i])
            if trust[alternative] > trust[winner]:
                order.remove(alternative)
                order.insert(0, alternative)
                fallback_from = winner
        return Ranking(order=order, scores=scores, fallback_from=fallback_from)

    def evict_order(self, views: Sequence[View]) -> list[str]:
        return [v.id for v in sorted(views, key=lambda v: (self.permission(v), v.last_used))]


class LRU:
    name = "lru"

    def rank(self, views: Sequence[View], *, low_power: bool = False) -> Ranking:
        resident = sorted((v for v in views if v.resident), key=lambda v: -v.last_used)
        others = sorted((v for v in views if not v.resident), key=lambda v: (not v.fits, -v.expertise))
        return Ranking(order=[v.id for v in resident + others])

    def evict_order(self, views: Sequence[View]) -> list[str]:
        return [v.id for v in sorted(views, key=lambda v: v.last_used)]


class AlwaysBest:
    name = "always-best"

    def rank(self, views: Sequence[View], *, low_power: bool = False) -> Ranking:
        return Ranking(order=[v.id for v in sorted(views, key=lambda v: (not v.fits, -v.expertise))])

    def evict_order(self, views: Sequence[View]) -> list[str]:
        return [v.id for v in sorted(views, key=lambda v: v.last_used)]


POLICIES = {"sage": Sage, "lru": LRU, "always-best": AlwaysBest}


def make_policy(name: str, **options):
    """A policy by name; sage takes persistence, trust_threshold, low_power_factor."""
    if name not in POLICIES:
        raise GfedgeError(f"unknown zoo policy '{name}'", f"use one of {', '.join(POLICIES)}")
    return POLICIES[name](**options) if name == "sage" else POLICIES[name]()
