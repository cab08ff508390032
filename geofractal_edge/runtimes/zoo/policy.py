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
If the winner's trust is below `trust_threshold`, the best-trusted alternative goes first instead;
and if it is below `relative_floor` (default 0.75) x the trust of the best candidate that fits, that
candidate goes first: cheapness and persistence choose among models nearly as good as the best, they
never buy a far worse answer. (Without the floor, under a budget that holds one specialist, a
resident generalist at 0.44 trust beat a 1.0 specialist whose swap cost was ~1: permission 0.53 vs
0.49, and it kept winning for the whole phase, since the swap cost is charged per request.)
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

    def __init__(self, *, persistence: float = 1.2, trust_threshold: float = 0.3, relative_floor: float = 0.75, low_power_factor: float = 4.0) -> None:
        self.persistence = persistence
        self.trust_threshold = trust_threshold
        self.relative_floor = relative_floor
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
        winner = order[0]
        by_id = {v.id: v for v in views}
        alternative = self._better_than(by_id[winner], [by_id[i] for i in order[1:]])
        if alternative is None:
            return Ranking(order=order, scores=scores)
        order.remove(alternative)
        order.insert(0, alternative)
        return Ranking(order=order, scores=scores, fallback_from=winner)

    def _better_than(self, winner: View, rivals: list[View]) -> str | None:
        """The rival that goes first instead of a winner trusted too little (absolutely, or against the best that fits)."""
        if winner.expertise < self.trust_threshold:
            pool = rivals
        elif any(v.fits for v in rivals) and winner.expertise < self.relative_floor * max(v.expertise for v in rivals if v.fits):
            pool = [v for v in rivals if v.fits]
        else:
            return None
        best = max(pool, key=lambda v: v.expertise, default=None)
        return best.id if best is not None and best.expertise > winner.expertise else None

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
    """A policy by name; sage takes persistence, trust_threshold, relative_floor, low_power_factor."""
    if name not in POLICIES:
        raise GfedgeError(f"unknown zoo policy '{name}'", f"use one of {', '.join(POLICIES)}")
    return POLICIES[name](**options) if name == "sage" else POLICIES[name]()
