"""How models become resident and leave: the zoo's memory accounting, loads, runs and unloads.

Memory is measured, one load or unload at a time under `_load_lock`, so each process delta belongs
to one model:
- a load counts the session plus warm-up runs: the first golden case and the last request's
  inputs, twice each, because onnxruntime allocates a memory pattern per input shape on the second
  run of that shape (for int4 graphs that is ~10 MB of dequantized weights per shape);
- a run that grows the process by >= 64 KiB while it is the only work in flight adds that growth
  to its model's cost (a new input shape), and evicts others if the budget is now exceeded;
- an unload is measured after gc and malloc_trim. Outputs are copied before they are returned: a
  numpy output from onnxruntime is a view that keeps the whole session's memory alive.
The budget counts max(measured, manifest estimate) per resident model; a model never measured is
expected to cost its estimate plus the median overhead measured so far.

`Residency` is the part of `Zoo` that does this; it uses the zoo's models, lock, policy, trust,
meter and metrics. Lock order: the zoo's lock is never held while `_load_lock` is taken.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from geofractal_edge.errors import GfedgeError, InputError
from geofractal_edge.runtimes.zoo.catalog import LOADING, QUARANTINED, REGISTERED, RESIDENT, Entry, Request
from geofractal_edge.runtimes.zoo.errors import BusyError, ModelTooLargeError
from geofractal_edge.runtimes.zoo.memory import trim
from geofractal_edge.runtimes.zoo.policy import View

MIB = 1 << 20
DEFAULT_OVERHEAD = 1 * MIB  # a never-measured model: estimate + this, until a load is measured
DEFAULT_LOAD_S = 0.05
GROWTH_BYTES = 64 << 10  # run-time growth below this is allocator noise, not the model


class Failed(Exception):
    """A model failed to load or run; it is quarantined and the request moves on."""


class Residency:
    """Loads, runs and unloads for `Zoo`, with the memory accounting that decides them."""

    def _eviction_view(self, entry: Entry) -> View:
        """Expertise for the recent demand: trust averaged over the recent requests it could serve."""
        demand = list(self._demand)
        expertise = sum(self.trust.get(entry.id, c) for c, ids in demand if entry.id in ids) / len(demand) if demand else 0.0
        return View(id=entry.id, expertise=expertise, resident=True, bytes=self._cost(entry), last_used=entry.last_used)

    def _cost(self, entry: Entry) -> int:
        """What a resident model counts against the budget: measured, never below the estimate."""
        return max(entry.measured_bytes or 0, entry.estimate_bytes)

    def _expected(self, entry: Entry) -> int:
        if entry.measured_bytes is not None:
            return self._cost(entry)
        overheads = [e.measured_bytes - e.estimate_bytes for e in self._models.values() if e.measured_bytes is not None]
        return entry.estimate_bytes + max(0, int(statistics.median(overheads)) if overheads else DEFAULT_OVERHEAD)

    def _load_seconds(self, entry: Entry) -> float:
        if entry.load_seconds is not None:
            return entry.load_seconds
        speeds = [e.estimate_bytes / e.load_seconds for e in self._models.values() if e.load_seconds]
        return entry.estimate_bytes / statistics.median(speeds) if speeds else DEFAULT_LOAD_S

    def accounted_bytes(self) -> int:
        with self._cond:
            return sum(self._cost(e) for e in self._models.values() if e.state == RESIDENT) + self._reserved

    def _held_bytes(self) -> int:
        """Bytes that cannot be freed now: pinned residents and loads in flight."""
        return sum(self._cost(e) for e in self._models.values() if e.state == RESIDENT and e.pins) + self._reserved

    def _make_room(self, need: int, entry: Entry) -> list | None:
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
        for model_id in self.policy.evict_order([self._eviction_view(e) for e in evictable]):
            if fits(freed, len(chosen)):
                break
            chosen.append(self._models[model_id])
            freed += self._cost(self._models[model_id])
        if not fits(freed, len(chosen)):
            return None
        return [self._detach(e) for e in chosen]

    def _detach(self, entry: Entry, *, state: str = REGISTERED) -> tuple[Entry, object]:
        session, entry.session = entry.session, None
        if entry.state == RESIDENT:
            entry.state = state
            entry.evictions += 1
            self.metrics.count("evictions")
        return entry, session

    def _release(self, victims: list) -> None:
        """Drop detached sessions one at a time and measure what each gave back."""
        if not victims:
            return
        with self._load_lock:
            while victims:
                entry, session = victims.pop()
                before = self.meter.read().counted()
                del session
                trim()
                entry.freed_bytes = before - self.meter.read().counted()
        self._record_memory()

    def _record_memory(self) -> None:
        self.metrics.memory(self.accounted_bytes(), self.measured_bytes())

    def measured_bytes(self) -> int:
        """What the process holds now above its baseline (RSS, plus device memory where counted)."""
        return self.meter.read().counted() - self.baseline.counted()

    # ---- load, run, unpin ----

    def _bring_in(self, entry: Entry, *, count: str) -> bool:
        """Make `entry` resident (it is pinned by the caller); True if this call loaded it."""
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while True:
                if entry.state == RESIDENT:
                    return False
                if entry.state == QUARANTINED:
                    raise Failed(entry.reason)
                victims = None
                if entry.state == REGISTERED:
                    need = self._expected(entry)
                    victims = self._make_room(need, entry)
                if victims is not None:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BusyError(f"no room for '{entry.id}' within {self.wait_s:.0f} s: the budget is held by models in use", "retry, or raise --budget")
                self._cond.wait(remaining)
            entry.state = LOADING
            self._reserved += need
        session = None
        try:
            self._release(victims)
            with self._load_lock:
                ticket = self._work_begin()
                try:
                    session, cost, seconds = self._open(entry)
                finally:
                    self._work_end(ticket)
        except BaseException as exc:
            with self._cond:
                self._reserved -= need
                self._quarantine(entry, f"load failed: {_reason(exc)}")
                self._cond.notify_all()
            if isinstance(exc, Exception):
                raise Failed(entry.reason) from exc
            raise
        with self._cond:
            self._reserved -= need
            entry.session, entry.state = session, RESIDENT
            entry.measured_bytes, entry.load_seconds = cost, seconds
            entry.loads += 1
            self.book.put(entry.manifest_sha, measured_bytes=cost, load_seconds=seconds)
            self.metrics.count(count)
            extra = self._make_room(0, entry) or []  # measured more than expected: evict more now
            self._cond.notify_all()
        self._release(extra)
        self._record_memory()
        return True

    def _new_session(self, entry: Entry):
        from geofractal_edge.backends.onnxruntime import Session

        session = Session(entry.bundle, providers=self.providers, key_capacity=self.key_capacity)
        for folder in self.keyring.folders:
            session.keys.add_folder(folder)
        self.meter.use_gpu(session.providers_used)
        cases = entry.bundle.golden_cases()
        for _ in range(2):  # the second run of a shape allocates its memory pattern: count it
            if cases:
                session.run(cases[0].inputs, key=cases[0].key if entry.takes_key else None)
            recent = self._last_feeds.get(tuple(sorted(i["name"] for i in entry.data_inputs)))
            if recent is not None:
                feeds, key = recent
                try:
                    session.run(feeds, key=(key if key and entry.accepts(Request(inputs=None, key=key), self.keyring) else entry.default_key) if entry.takes_key else None)
                except GfedgeError:
                    pass  # the last request does not suit this model; the golden case did the warm-up
        return session

    def _open(self, entry: Entry):
        before = self.meter.read().counted()
        started = time.perf_counter()
        session = self._new_session(entry)
        seconds = time.perf_counter() - started
        return session, self.meter.read().counted() - before, seconds

    def _run(self, entry: Entry, request: Request) -> dict[str, np.ndarray]:
        session = entry.session
        feeds = _feeds(entry, request.inputs)
        ticket = self._work_begin()
        alone = False
        try:
            with entry.run_lock:
                if entry.takes_key:
                    session.use_key(request.key or entry.default_key)
                before = self.meter.read().counted()
                outputs = session.run(feeds)
                grown = self.meter.read().counted() - before
            # onnxruntime's numpy outputs are views that keep the session's memory alive: copy
            outputs = {name: np.array(value, copy=True) for name, value in outputs.items()}
        except GfedgeError:
            raise  # the request's fault (inputs, key): the model stays healthy
        except Exception as exc:
            with self._cond:
                self._quarantine(entry, f"run failed: {_reason(exc)}")
            raise Failed(entry.reason) from exc
        finally:
            alone = self._work_end(ticket)
        self._last_feeds[tuple(sorted(feeds))] = (feeds, request.key)
        if grown >= GROWTH_BYTES and alone:  # with other work in flight the growth is not surely this model's
            self._grew(entry, grown)
        return outputs

    def _work_begin(self) -> tuple[bool, int]:
        with self._cond:
            self._in_flight += 1
            self._started += 1
            return self._in_flight == 1, self._started

    def _work_end(self, ticket: tuple[bool, int]) -> bool:
        """True if nothing else ran while this piece of work did."""
        with self._cond:
            self._in_flight -= 1
            return ticket[0] and self._started == ticket[1]

    def _grew(self, entry: Entry, grown: int) -> None:
        """A run grew the process (a new input shape): count it against the model, evict if over."""
        with self._cond:
            if entry.state != RESIDENT:
                return
            entry.measured_bytes = (entry.measured_bytes or 0) + grown
            self.book.put(entry.manifest_sha, measured_bytes=entry.measured_bytes, load_seconds=entry.load_seconds)
            victims = self._make_room(0, entry) or []
        self._release(victims)

    def _quarantine(self, entry: Entry, reason: str) -> None:
        entry.state, entry.reason = QUARANTINED, reason
        entry.failures += 1

    def _unpin(self, entry: Entry) -> None:
        victims = []
        with self._cond:
            entry.pins -= 1
            if entry.pins == 0 and entry.state == QUARANTINED and entry.session is not None:
                victims.append(self._detach(entry, state=QUARANTINED))
            self._cond.notify_all()
        self._release(victims)


def _feeds(entry: Entry, inputs) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in entry.data_inputs:
        value = inputs[spec["name"]]
        if isinstance(value, np.ndarray):
            feeds[spec["name"]] = value
            continue
        try:
            feeds[spec["name"]] = np.asarray(value, dtype=spec["dtype"])
        except (TypeError, ValueError) as exc:
            raise InputError(f"input '{spec['name']}' cannot be read as {spec['dtype']} ({exc})", f"pass a list of numbers of shape {spec['shape']}") from None
    return feeds


def _reason(exc: BaseException) -> str:
    text = exc.one_line() if isinstance(exc, GfedgeError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]
