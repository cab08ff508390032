"""How models become resident and leave: loads, runs and unloads, each measured.

Memory is measured one load or unload at a time (`_load_lock`), so each process delta belongs to
one model:
- a load re-opens the bundle (`catalog.reopen`: every file hashed again, the manifest compared with
  the one registered), so a byte damaged since registration quarantines the model instead of being
  served; it reads the bundle's keys right after that check, then runs the first golden case
  twice, because onnxruntime allocates a memory pattern per input shape on the second run of that
  shape. Only golden inputs warm a model up, never a caller's;
- a run that grows the process by >= 64 KiB while it is the only work in flight adds that growth
  to its model's cost (a new input shape), and evicts others if the budget is now exceeded. Only
  load measurements are remembered across restarts (`MemoryBook`): no caller's request sets a
  stored cost. A load whose measured cost is an outlier (negative; over `OUTLIER_FACTOR` x the
  model's previous measured cost + 1 MiB; never measured before, over `ESTIMATE_FACTOR` x the
  manifest's estimate + `OUTLIER_SLACK`: other work in the process grew or shrank it meanwhile,
  e.g. a request body arriving) counts what was expected instead and is not remembered, so one
  noisy measurement cannot keep a model out of the budget, now or after a restart;
- a load's peak is measured too (the RSS high-water mark, VmHWM, reset as the load starts): creating
  a session holds the float initializers until prepacking and malloc_trim, above what the model then
  costs. Kept (and remembered) only from a load that ran alone with a plausible cost and peak, so a
  concurrent run's activations are not charged to it; the next load of that model reserves its peak and makes
  room for it first. Where the mark cannot be reset (not Linux), a load reserves its cost as before;
- an unload is measured between two rounds of gc and malloc_trim, and a load is read after one: what
  was freed before either is handed back first, not counted as the model's. Outputs are copied
  before they are returned: a numpy output from onnxruntime is a view that keeps the whole
  session's memory alive.

The bookkeeping (states, pins, reservations, the budget arithmetic) belongs to `ZooState`, which
this class is given; it does the I/O around it and never holds the state's lock while loading,
running or measuring.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping

import numpy as np

from geofractal_edge.backends.process import trim  # under the (not re-entrant) load lock: gc's finalizers must never call into the zoo
from geofractal_edge.errors import GfedgeError
from geofractal_edge.runtimes.zoo.catalog import ChangedOnDisk, Entry, reopen
from geofractal_edge.runtimes.zoo.state import EvictOrder, Failed, Victims, ZooState

GROWTH_BYTES = 64 << 10  # run-time growth below this is allocator noise, not the model
OUTLIER_FACTOR = 2  # a load measured above this x its previous cost (+ 1 MiB) is noise: not counted, not remembered
ESTIMATE_FACTOR = 4  # never measured: above this x the manifest's estimate + OUTLIER_SLACK is noise
OUTLIER_SLACK = 32 << 20  # onnxruntime's own session overhead (1-2 MiB for the tiny bundles) fits well inside


class Residency:
    def __init__(self, state: ZooState, *, evict_order: EvictOrder, meter, metrics, book, keyring,
                 providers: tuple[str, ...] | None = None, key_capacity: int = 64, wait_s: float = 30.0) -> None:
        self.state = state
        self.evict_order = evict_order
        self.meter = meter
        self.metrics = metrics
        self.book = book
        self.keyring = keyring
        self.providers = providers
        self.key_capacity = key_capacity
        self.wait_s = wait_s
        self._load_lock = threading.Lock()  # one load or unload measured at a time
        self.baseline = meter.read()

    def settle(self) -> None:
        """Hand freed memory back and read the baseline that measured bytes are counted from."""
        trim()
        self.baseline = self.meter.read()

    def trim(self) -> None:
        """Hand freed memory back to the OS, between measurements (never inside one)."""
        with self._load_lock:
            trim()

    @contextlib.contextmanager
    def foreign_work(self):
        """Memory-heavy work that is no model's (a large request body being parsed): loads and unloads
        wait for it and runs during it are not alone, so none of its memory is measured as a model's."""
        with self._load_lock:
            ticket = self.state.begin_work()
            try:
                yield
            finally:
                self.state.end_work(ticket)

    def measured_bytes(self) -> int:
        """What the process holds now above its baseline (RSS, plus device memory where counted)."""
        return self.meter.read().counted() - self.baseline.counted()

    # ---- load ----

    def bring_in(self, entry: Entry, *, count: str) -> bool:
        """Make `entry` resident (the caller has pinned it); True if this call loaded it."""
        reserved = self.state.reserve(entry, evict_order=self.evict_order, wait_s=self.wait_s)
        if reserved is None:
            return False
        need, victims = reserved
        previous = entry.measured_bytes
        try:
            self.release(victims)
            with self._load_lock:
                ticket = self.state.begin_work()
                try:
                    session, cost, peak, seconds = self._open(entry)
                finally:
                    alone = self.state.end_work(ticket)
        except BaseException as exc:
            reason = exc.one_line() if isinstance(exc, ChangedOnDisk) else f"load failed: {_reason(exc)}"
            self.state.load_failed(entry, need, reason)
            if isinstance(exc, Exception):
                raise Failed(reason) from exc
            raise
        plausible = plausible_cost(cost, estimate=entry.estimate_bytes, previous=previous)
        counted = cost if plausible else self.state.expected(entry)  # `need` may be the load's peak, more than it costs
        peak = peak if plausible and alone and plausible_peak(peak, cost=cost) else None  # beside other work the mark is not this load's
        extra = self.state.loaded(entry, need, session, cost=counted, seconds=seconds, evict_order=self.evict_order, peak=peak)
        if plausible:
            self.book.put(entry.manifest_sha, measured_bytes=cost, load_seconds=seconds, peak_bytes=entry.peak_bytes)  # this load's, else the one kept
        self.metrics.count(count)
        self.release(extra)
        self._record_memory()
        return True

    def new_session(self, entry: Entry):
        """A session of the entry's bundle as it is on disk now, checked against what was registered."""
        from geofractal_edge.backends.onnxruntime import Session

        bundle = reopen(entry)
        # Each session keeps an arena of its own: what a model holds must go when it is evicted. A shared
        # arena keeps its high-water mark with nothing loaded (112 MiB on the wide hard trace, against
        # 0.4-1.1 MiB with an arena per session), memory the zoo would charge to no model. The arena is not
        # shrunk after calls either (after none: arena_shrinkage, nor after large ones: shrink_above_batch): a model's
        # measured cost includes its activations, which a shrinking arena would give back and take again, uncounted by the budget.
        # No second session for small calls (small_call_threads): it would hold a second copy of the weights, and its
        # activations would come after the warm-up runs below measured the cost.
        # The entry's input checker (requests are checked with it before the load) is the session's too: one per model.
        session = Session(bundle, providers=self.providers, key_capacity=self.key_capacity, checker=entry.checker,
                          shared_arena=False, arena_shrinkage=False, shrink_above_batch=0, small_call_threads=0)
        for folder in self.keyring.folders:
            session.keys.add_folder(folder)
        for name in bundle.key_names()[: self.key_capacity]:
            session.keys.get(name)  # read now, right after their hashes were checked
        self.meter.use_gpu(session.providers_used)
        cases = bundle.golden_cases()
        for _ in range(2):  # the second run of a shape allocates its memory pattern: count it
            if cases:
                session.run(cases[0].inputs, key=cases[0].key if entry.takes_key else None)
        return session

    def _open(self, entry: Entry):
        """A new session with what its load cost, its peak and its seconds, from two meter readings. The peak is
        the load's height above its start (never below its cost), None where the mark could not be restarted.

        Garbage is collected and the heap's free pages go back to the OS before the first reading: the loader trims the
        heap after it makes the session, and pages freed before the load (a request's body, other work) would otherwise
        leave inside the measured window and make the load's cost too small, even negative, so not remembered."""
        trim()
        reset = self.meter.reset_peak()
        before = self.meter.read()
        started = time.perf_counter()
        session = self.new_session(entry)
        seconds = time.perf_counter() - started
        after = self.meter.read()
        cost = after.counted() - before.counted()
        high = self.meter.peak_rss() if reset else None
        if high is None:
            return session, cost, None, seconds
        device = (after.device or 0) - (before.device or 0)  # no device peak is read: its growth stands for it
        return session, cost, max(cost, high - before.rss + device), seconds

    # ---- run ----

    def run(self, entry: Entry, feeds: Mapping[str, np.ndarray], *, key: str | None) -> dict[str, np.ndarray]:
        """Run checked feeds on the resident `entry` (pinned by the caller); outputs copied."""
        session = entry.session
        ticket = self.state.begin_work()
        alone = False
        try:
            with entry.run_lock:
                if entry.takes_key:
                    session.use_key(key or entry.default_key)
                before = self.meter.read().counted()
                outputs = session.run(feeds)
                grown = self.meter.read().counted() - before
            # onnxruntime's numpy outputs are views that keep the session's memory alive: copy
            outputs = {name: np.array(value, copy=True) for name, value in outputs.items()}
        except GfedgeError:
            raise  # the request's fault (inputs, key): the model stays healthy
        except Exception as exc:
            self.state.quarantine(entry, f"run failed: {_reason(exc)}")
            raise Failed(entry.reason) from exc
        finally:
            alone = self.state.end_work(ticket)
        if grown >= GROWTH_BYTES and alone:  # with other work in flight the growth is not surely this model's
            self.release(self.state.grew(entry, grown, evict_order=self.evict_order))
        return outputs

    # ---- unload ----

    def unpin(self, entry: Entry) -> None:
        self.release(self.state.unpin(entry))

    def release(self, victims: Victims) -> None:
        """Drop detached sessions one at a time and measure what each gave back."""
        if not victims:
            return
        with self._load_lock:
            trim()  # what was freed before, handed back before the first reading; each trim after a drop is that session's
            while victims:
                entry, session = victims.pop()
                before = self.meter.read().counted()
                del session
                trim()
                self.state.freed(entry, before - self.meter.read().counted())
        self._record_memory()

    def _record_memory(self) -> None:
        self.metrics.memory(self.state.accounted_bytes(), self.measured_bytes())


def plausible_cost(cost: int, *, estimate: int, previous: int | None) -> bool:
    """Is a measured load cost fit to count and remember: not an outlier against the model's previous
    measured cost, or, never measured, against the manifest's estimate?"""
    if previous is not None:
        return 0 <= cost <= OUTLIER_FACTOR * previous + (1 << 20)
    return 0 <= cost <= ESTIMATE_FACTOR * estimate + OUTLIER_SLACK


def plausible_peak(peak: int | None, *, cost: int) -> bool:
    """Is a measured load peak fit to reserve and remember: known, and not beyond `ESTIMATE_FACTOR` x the load's
    cost + `OUTLIER_SLACK`? A remembered peak over the budget keeps a model out, so a wild one is not kept.
    (A measured peak is never below its cost: `Residency._open` raises it to the cost.)"""
    return peak is not None and peak <= ESTIMATE_FACTOR * cost + OUTLIER_SLACK


def _reason(exc: BaseException) -> str:
    text = exc.one_line() if isinstance(exc, GfedgeError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]
