"""What the policy sees: the zoo's entries as `View`s, for choosing a model and for choosing who leaves.

`Chooser.rank` finds the candidates for a request (healthy models that declare its family, input
names and key), describes each to the policy (trust in the request's context, swap cost from the
measured load time and size, whether it fits beside what is pinned) and returns the policy's
order. `Chooser.evict_order` does the same for resident models, with expertise averaged over the
recent demand. It only reads: `ZooState` runs these under its lock when it pins or evicts.
"""

from __future__ import annotations

from geofractal_edge.runtimes.zoo.catalog import LOADING, QUARANTINED, RESIDENT, Entry, Request
from geofractal_edge.runtimes.zoo.errors import NoCandidateError, UnknownModelError
from geofractal_edge.runtimes.zoo.policy import Ranking, View


class Chooser:
    def __init__(self, state, *, policy, trust, keyring, swap_scale_s: float = 1.0) -> None:
        self.state = state
        self.policy = policy
        self.trust = trust
        self.keyring = keyring
        self.swap_scale_s = swap_scale_s

    def rank(self, request: Request, tried: dict[str, str], *, low_power: bool = False) -> tuple[Ranking, list[Entry]]:
        """The policy's order over the request's candidates (models already tried left out)."""
        candidates = self._candidates(request, tried)
        if not candidates and request.key is not None and request.key not in self.keyring.names():
            self.keyring.rescan()  # a key file may have been dropped in since the last scan
            candidates = self._candidates(request, tried)
        if not candidates:
            raise self._no_candidate(request, tried)
        held = self.state.held_bytes()
        views = [self._view(e, request.context, held) for e in candidates]
        return self.policy.rank(views, low_power=low_power), candidates

    def evict_order(self, residents: list[Entry]) -> list[str]:
        """Expertise for the recent demand: trust averaged over the recent requests each could serve."""
        demand = self.state.demand()
        views = []
        for entry in residents:
            expertise = sum(self.trust.get(entry.id, c) for c, ids in demand if entry.id in ids) / len(demand) if demand else 0.0
            views.append(View(id=entry.id, expertise=expertise, resident=True, bytes=self.state.cost(entry), last_used=entry.last_used))
        return self.policy.evict_order(views)

    def _candidates(self, request: Request, tried: dict[str, str]) -> list[Entry]:
        entries = self.state.entries()
        if request.model is not None and all(e.id != request.model for e in entries):
            raise UnknownModelError(f"no model '{request.model}' in the zoo", f"known models: {', '.join(e.id for e in entries) or 'none'}")
        return [e for e in entries if e.state != QUARANTINED and e.id not in tried and e.accepts(request, self.keyring)]

    def _no_candidate(self, request: Request, tried: dict[str, str]) -> NoCandidateError:
        if tried:
            failed = "; ".join(f"{k}: {v}" for k, v in tried.items())
            return NoCandidateError(f"every candidate failed ({failed})", "see `gfedge ps`; fix or replace the failing bundles")
        entries = self.state.entries()
        wanted = [f"inputs {sorted(request.inputs)}" if request.inputs is not None else "", f"key '{request.key}'" if request.key else "",
                  f"family {request.family}" if request.family else "", f"model {request.model}" if request.model else ""]
        quarantined = [e.id for e in entries if e.state == QUARANTINED]
        keys = sorted({k for e in entries if e.bundle is not None for k in e.bundle.key_names()} | self.keyring.names())
        fix = f"known keys: {', '.join(keys) or 'none'}" + (f"; quarantined: {', '.join(quarantined)}" if quarantined else "")
        return NoCandidateError(f"no healthy model in the zoo takes {', '.join(w for w in wanted if w)}", fix)

    def _view(self, entry: Entry, context: str, held: int) -> View:
        resident = entry.state == RESIDENT
        expected = self.state.expected(entry)
        budget = self.state.budget_bytes
        return View(
            id=entry.id, expertise=self.trust.get(entry.id, context), resident=resident,
            swap_cost=0.0 if resident or entry.state == LOADING else self.state.load_seconds(entry) / self.swap_scale_s + expected / max(1, budget),
            fits=resident or expected <= budget - held, bytes=expected, last_used=entry.last_used,
        )
