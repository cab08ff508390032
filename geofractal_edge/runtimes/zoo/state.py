"""The zoo's state behind one lock: its models, what is reserved and running, answers awaiting feedback.

`ZooState` is the only writer of the models table and of each entry's residency fields (state,
session, pins, counters, measured bytes); every change is one of its methods, and each takes the
lock for as long as the change lasts, never across I/O. Waits use its condition. Decisions that
need the policy come in as functions (`rank`, `evict_order`) and run under the lock, so choosing a
model and pinning it, or choosing victims and detaching them, are one step.

The budget arithmetic lives here too: a resident model counts max(measured, manifest estimate); a
model never measured is expected to cost its estimate plus the median overhead measured so far;
a load in flight counts what it reserved: what it will cost, or its measured load peak where that is
higher (session creation holds the float initializers until prepacking and malloc_trim), so room is
made for the peak before the load starts. A pinned model is never evicted.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from geofractal_edge.errors import GfedgeError
from geofractal_edge.runtimes.zoo.catalog import LOADING, QUARANTINED, REGISTERED, RESIDENT, Entry
from geofractal_edge.runtimes.zoo.errors import BusyError, ModelTooLargeError, UnknownModelError

MIB = 1 << 20
DEFAULT_OVERHEAD = 1 * MIB  # a never-measured model: estimate + this, until a load is measured
DEFAULT_LOAD_S = 0.05
MAX_PENDING = 100_000  # answered requests remembered for feedback

Victims = list  # (Entry, session) pairs detached under the lock; the caller releases them outside it
EvictOrder = Callable[[list[Entry]], list[str]]  # evictable residents -> ids, first to leave first


class Failed(Exception):
    """A model failed to load or run; it is quarantined and the request moves on."""


class ZooState:
    def __init__(self, *, budget_bytes: int, max_loaded: int | None = None, metrics=None) -> None:
        self.budget_bytes = int(budget_bytes)
        self.max_loaded = max_loaded  # a cap on resident models besides the bytes (like OLLAMA_MAX_LOADED_MODELS)
        self._metrics = metrics
        self._models: dict[str, Entry] = {}
        self._cond = threading.Condition(threading.RLock())
        self._reserved = 0  # bytes reserved by loads in flight
        self._in_flight = 0  # runs and loads now: run growth is attributed only to a run that was alone
        self._started = 0
        self._pending: OrderedDict[str, tuple[str, str]] = OrderedDict()  # request id -> (model, context)
        self._demand: deque[tuple[str, frozenset]] = deque(maxlen=64)  # recent (context, candidate ids)

    # ---- reading ----

    def get(self, model: str) -> Entry:
        with self._cond:
            if model not in self._models:
                raise UnknownModelError(f"no model '{model}' in the zoo", f"known models: {', '.join(self._models) or 'none'}")
            return self._models[model]

    def entries(self) -> list[Entry]:
        with self._cond:
            return list(self._models.values())

    def demand(self) -> list[tuple[str, frozenset]]:
        with self._cond:
            return list(self._demand)

    def describe(self, model: str) -> dict:
        with self._cond:
            entry = self.get(model)
            info = entry.describe()
            info["expected_bytes"] = self.expected(entry) if entry.bundle is not None else None
        return info

    # ---- accounting ----

    def cost(self, entry: Entry) -> int:
        """What a resident model counts against the budget: measured, never below the estimate."""
        return max(entry.measured_bytes or 0, entry.estimate_bytes)

    def expected(self, entry: Entry) -> int:
        if entry.measured_bytes is not None:
            return self.cost(entry)
        overheads = [e.measured_bytes - e.estimate_bytes for e in self.entries() if e.measured_bytes is not None]
        return entry.estimate_bytes + max(0, int(statistics.median(overheads)) if overheads else DEFAULT_OVERHEAD)

    def expected_peak(self, entry: Entry) -> int:
        """What loading `entry` holds at its height: its last measured load peak, never below what it will cost, and
        at most the whole budget (a peak over the budget empties the zoo for the load; only a cost over it is refused)."""
        return max(self.expected(entry), min(entry.peak_bytes or 0, self.budget_bytes))

    def load_seconds(self, entry: Entry) -> float:
        if entry.load_seconds is not None:
            return entry.load_seconds
        speeds = [e.estimate_bytes / e.load_seconds for e in self.entries() if e.load_seconds]
        return entry.estimate_bytes / statistics.median(speeds) if speeds else DEFAULT_LOAD_S

    def accounted_bytes(self) -> int:
        with self._cond:
            return sum(self.cost(e) for e in self._models.values() if e.state == RESIDENT) + self._reserved

    def held_bytes(self) -> int:
        """Bytes that cannot be freed now: pinned residents and loads in flight."""
        with self._cond:
            return sum(self.cost(e) for e in self._models.values() if e.state == RESIDENT and e.pins) + self._reserved

    # ---- registration ----

    def is_current(self, name: str, signature: tuple) -> bool:
        """Keep the entry as it is: unchanged on disk, or busy (pinned, loading) until a later scan."""
        with self._cond:
            old = self._models.get(name)
            return old is not None and (old.signature == signature or old.pins > 0 or old.state == LOADING)

    def install(self, entry: Entry) -> Victims:
        """Add a registered entry, replacing the one of the same name (whose session is returned)."""
        with self._cond:
            old = self._models.get(entry.id)
            victims = [self._detach(old)] if old is not None and old.session is not None else []
            self._models[entry.id] = entry
            self._models = dict(sorted(self._models.items()))
            self._cond.notify_all()
        return victims

    def drop_missing(self, present: set[str]) -> tuple[list[str], Victims]:
        """Forget idle entries whose folders are gone; (their ids, their sessions)."""
        with self._cond:
            gone = [e for name, e in self._models.items() if name not in present and not e.pins and e.state != LOADING]
            victims = [self._detach(e) for e in gone if e.session is not None]
            for e in gone:
                del self._models[e.id]
        return [e.id for e in gone], victims

    # ---- pins ----

    def pin_best(self, rank: Callable, *, context: str | None) -> tuple[Entry, bool, str | None]:
        """Rank under the lock and pin the first choice: (entry, was resident, fallback_from).

        `rank()` returns (Ranking, candidates); `context` records the demand (a request's first try).
        """
        with self._cond:
            ranking, candidates = rank()
            if context is not None:
                self._demand.append((context, frozenset(e.id for e in candidates)))
            entry = self._models[ranking.order[0]]
            entry.pins += 1
            entry.last_used = time.monotonic()
            hit = entry.state == RESIDENT
            entry.hits += hit
        return entry, hit, ranking.fallback_from

    def pin_cold(self, rank: Callable) -> tuple[Entry, bool]:
        """Pin the first choice unless it is resident or loading already: (entry, pinned)."""
        with self._cond:
            entry = self._models[rank()[0].order[0]]
            if entry.state in (RESIDENT, LOADING):
                return entry, False
            entry.pins += 1
            return entry, True

    def pin(self, model: str) -> Entry:
        """Pin one model for an explicit load; a quarantined one whose bundle registered is retried."""
        with self._cond:
            entry = self.get(model)
            if entry.state == QUARANTINED:
                if entry.bundle is None:
                    raise GfedgeError(f"model '{model}' is quarantined: {entry.reason}", "fix or replace the bundle folder; it is re-checked at the next scan")
                entry.state, entry.reason = REGISTERED, ""
            entry.pins += 1
            return entry

    def unpin(self, entry: Entry) -> Victims:
        with self._cond:
            entry.pins -= 1
            victims = [self._detach(entry, state=QUARANTINED)] if entry.pins == 0 and entry.state == QUARANTINED and entry.session is not None else []
            self._cond.notify_all()
        return victims

    # ---- loads and unloads ----

    def reserve(self, entry: Entry, *, evict_order: EvictOrder, wait_s: float) -> tuple[int, Victims] | None:
        """Wait for room for the load's peak, then mark `entry` loading with it reserved: (bytes, residents to release).

        None if it is resident already; Failed if it is quarantined; BusyError after `wait_s`.
        """
        deadline = time.monotonic() + wait_s
        with self._cond:
            while True:
                if entry.state == RESIDENT:
                    return None
                if entry.state == QUARANTINED:
                    raise Failed(entry.reason)
                victims = None
                if entry.state == REGISTERED:
                    need = self.expected_peak(entry)
                    victims = self._make_room(need, entry, evict_order)
                if victims is not None:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BusyError(f"no room for '{entry.id}' within {wait_s:.0f} s: the budget is held by models in use", "retry, or raise --budget")
                self._cond.wait(remaining)
            entry.state = LOADING
            self._reserved += need
            return need, victims

    def loaded(self, entry: Entry, reserved: int, session, *, cost: int, seconds: float, evict_order: EvictOrder,
               peak: int | None = None) -> Victims:
        """The load finished: resident with its measured cost (and load peak, when measured); returns residents
        to evict if it cost more than expected."""
        with self._cond:
            self._reserved -= reserved
            entry.session, entry.state = session, RESIDENT
            entry.measured_bytes, entry.load_seconds = cost, seconds
            if peak is not None:
                entry.peak_bytes = peak
            entry.loads += 1
            victims = self._make_room(0, entry, evict_order) or []
            self._cond.notify_all()
        return victims

    def load_failed(self, entry: Entry, reserved: int, reason: str) -> None:
        with self._cond:
            self._reserved -= reserved
            self._quarantine(entry, reason)
            self._cond.notify_all()

    def freed(self, entry: Entry, nbytes: int) -> None:
        with self._cond:
            entry.freed_bytes = nbytes

    def detach_idle(self, model: str) -> Victims:
        """Unload one model now; BusyError while it serves a request."""
        with self._cond:
            entry = self.get(model)
            if entry.pins:
                raise BusyError(f"model '{model}' is serving {entry.pins} request(s)", "retry when it is idle")
            return [self._detach(entry)] if entry.state == RESIDENT else []

    def detach_all_idle(self) -> Victims:
        with self._cond:
            return [self._detach(e) for e in self._models.values() if e.state == RESIDENT and not e.pins]

    # ---- runs ----

    def begin_work(self) -> tuple[bool, int]:
        with self._cond:
            self._in_flight += 1
            self._started += 1
            return self._in_flight == 1, self._started

    def end_work(self, ticket: tuple[bool, int]) -> bool:
        """True if nothing else ran while this piece of work did."""
        with self._cond:
            self._in_flight -= 1
            return ticket[0] and self._started == ticket[1]

    def grew(self, entry: Entry, grown: int, *, evict_order: EvictOrder) -> Victims:
        """A run grew the process (a new input shape): count it against the model, evict others if over."""
        with self._cond:
            if entry.state != RESIDENT:
                return []
            entry.measured_bytes = (entry.measured_bytes or 0) + grown
            return self._make_room(0, entry, evict_order) or []

    def quarantine(self, entry: Entry, reason: str) -> None:
        with self._cond:
            self._quarantine(entry, reason)
            self._cond.notify_all()

    def answered(self, entry: Entry, request_id: str, context: str) -> None:
        """Count the run and remember the answer for feedback (the oldest forgotten past MAX_PENDING)."""
        with self._cond:
            entry.runs += 1
            self._pending[request_id] = (entry.id, context)
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)

    def take_answered(self, request_id: str) -> tuple[str, str] | None:
        """(model, context) of an answered request, once."""
        with self._cond:
            return self._pending.pop(request_id, None)

    # ---- under the lock ----

    def _make_room(self, need: int, entry: Entry, evict_order: EvictOrder) -> Victims | None:
        """Detach unpinned residents (policy order) until `need` bytes and one more model fit; None if pins block it."""
        if need > self.budget_bytes:
            raise ModelTooLargeError(f"model '{entry.id}' needs {need / MIB:.1f} MiB, the budget is {self.budget_bytes / MIB:.1f} MiB", "raise --budget or use a smaller precision")
        used = self.accounted_bytes()
        count = sum(e.state in (RESIDENT, LOADING) for e in self._models.values()) + (entry.state not in (RESIDENT, LOADING))
        limit = self.max_loaded or count

        def fits(freed: int, evicted: int) -> bool:
            return used - freed + need <= self.budget_bytes and count - evicted <= limit

        if fits(0, 0):
            return []
        evictable = [e for e in self._models.values() if e.state == RESIDENT and not e.pins and e is not entry]
        chosen, freed = [], 0
        for model_id in evict_order(evictable):
            if fits(freed, len(chosen)):
                break
            chosen.append(self._models[model_id])
            freed += self.cost(self._models[model_id])
        if not fits(freed, len(chosen)):
            return None
        return [self._detach(e) for e in chosen]

    def _detach(self, entry: Entry, *, state: str = REGISTERED) -> tuple[Entry, object]:
        session, entry.session = entry.session, None
        if entry.state == RESIDENT:
            entry.state = state
            entry.evictions += 1
            if self._metrics is not None:
                self._metrics.count("evictions")
        return entry, session

    def _quarantine(self, entry: Entry, reason: str) -> None:
        entry.state, entry.reason = QUARANTINED, reason
        entry.failures += 1
