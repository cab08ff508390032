"""The zoo: one runtime serving many bundles under a measured memory budget.

A request is matched to candidates (models whose family, inputs and keys fit it), ranked by the
policy, and served by the first that loads and runs: the choice is pinned (a pinned model is never
evicted), its inputs are checked against its declaration, once (an oversized request is refused
before anything is built or loaded; the runner takes the `Checked` feeds as they are), it is
brought in (evicting unpinned models in the policy's order), run, and unpinned. So load -> run ->
unload is atomic per request. A model that fails to load or run, or whose bundle changed on disk
since it was registered, is quarantined with the reason and the request moves on.

Three parts, each given what it uses: `ZooState` (state.py) holds the models table, the lock and
the budget bookkeeping, and is the only thing that changes them; `Chooser` (selection.py) shows
the models to the policy; `Residency` (residency.py) loads, runs and unloads, measuring memory.
Measured load costs are remembered per manifest hash in `<zoo>/.gfedge-measured.json`, so a
restarted zoo admits models correctly.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geofractal_edge.errors import GfedgeError, InputError
from geofractal_edge.runtimes.zoo import catalog, report
from geofractal_edge.runtimes.zoo.catalog import Entry, Request
from geofractal_edge.runtimes.zoo.errors import ModelTooLargeError, UnknownRequestError
from geofractal_edge.runtimes.zoo.keyring import KeyRing
from geofractal_edge.runtimes.zoo.memory import MemoryBook, Meter, meminfo_bytes
from geofractal_edge.runtimes.zoo.metrics import Metrics
from geofractal_edge.runtimes.zoo.policy import make_policy
from geofractal_edge.runtimes.zoo.residency import Residency
from geofractal_edge.runtimes.zoo.selection import Chooser
from geofractal_edge.runtimes.zoo.state import Failed, ZooState
from geofractal_edge.runtimes.zoo.trust import TrustTable, priors_from_manifest

MEMORY_BOOK = ".gfedge-measured.json"


@dataclass(frozen=True)
class Answer:
    request_id: str
    model: str
    context: str
    outputs: dict[str, np.ndarray]
    hit: bool  # the model was resident when chosen
    swapped: bool  # this request loaded it
    seconds: float
    fallback_from: str | None = None
    decoded: str | None = None  # task with a vocabulary: argmax characters


class Zoo:
    def __init__(
        self, folder: Path | str, *, budget_bytes: int | None = None, target: str = "host-cpu", policy: str = "sage",
        policy_options: dict | None = None, key_folders: tuple[Path, ...] = (), key_capacity: int = 64,
        swap_scale_s: float = 1.0, wait_s: float = 30.0, providers: tuple[str, ...] | None = None, warm: bool = True,
        max_loaded: int | None = None,
    ) -> None:
        from geofractal_edge.targets import get_target

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise GfedgeError(f"zoo folder {self.folder} does not exist", "pass a folder holding bundle directories")
        self.profile = get_target(target)
        budget = int(budget_bytes) if budget_bytes is not None else self.profile.budget_bytes(host_total_bytes=meminfo_bytes("MemTotal"))
        self.policy = make_policy(policy, **(policy_options or {}))
        self.trust = TrustTable()
        self.metrics = Metrics()
        self.meter = Meter(memory_shared=self.profile.memory_shared)
        own_keys = self.folder / catalog.KEYS_FOLDER
        self.keyring = KeyRing(([own_keys] if own_keys.is_dir() else []) + [Path(f) for f in key_folders])
        self.book = MemoryBook(self.folder / MEMORY_BOOK)
        self.low_power = False
        self.state = ZooState(budget_bytes=budget, max_loaded=max_loaded, metrics=self.metrics)
        self.chooser = Chooser(self.state, policy=self.policy, trust=self.trust, keyring=self.keyring, swap_scale_s=swap_scale_s)
        self.residency = Residency(self.state, evict_order=self.chooser.evict_order, meter=self.meter, metrics=self.metrics, book=self.book,
                                   keyring=self.keyring, providers=providers, key_capacity=key_capacity, wait_s=wait_s)
        self._scan_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.scan()
        if warm:
            self._warm_up()
        self.residency.settle()

    @property
    def budget_bytes(self) -> int:
        return self.state.budget_bytes

    @budget_bytes.setter
    def budget_bytes(self, value: int) -> None:
        self.state.budget_bytes = int(value)

    @property
    def max_loaded(self) -> int | None:
        return self.state.max_loaded

    # ---- requests ----

    def infer(self, inputs, *, key: str | None = None, context: str | None = None, family: str | None = None,
              model: str | None = None, request_id: str | None = None) -> Answer:
        """Serve one request with the best candidate that loads and runs."""
        started = time.perf_counter()
        request = Request(inputs=dict(inputs), key=key, context=context or key or family or "default", family=family, model=model)
        tried: dict[str, str] = {}
        try:
            while True:
                entry, hit, fallback_from = self.state.pin_best(lambda: self._rank(request, tried), context=None if tried else request.context)
                self.metrics.selected(hit=hit, fallback=fallback_from is not None)
                try:
                    feeds = entry.feeds(request.inputs)  # the one check; the request's fault if this fails: before any load
                    swapped = False if hit else self.residency.bring_in(entry, count="swaps")
                    outputs = self.residency.run(entry, feeds, key=request.key)
                except (Failed, ModelTooLargeError) as exc:
                    tried[entry.id] = str(exc)
                    self.metrics.count("failures")
                    continue
                finally:
                    self.residency.unpin(entry)
                break
        except GfedgeError:
            self.metrics.count("errors")
            raise
        seconds = time.perf_counter() - started
        request_id = request_id or f"r{next(self._ids):08d}"
        self.state.answered(entry, request_id, request.context)
        self.metrics.finished(seconds)
        return Answer(request_id=request_id, model=entry.id, context=request.context, outputs=outputs, hit=hit, swapped=swapped,
                      seconds=seconds, fallback_from=fallback_from, decoded=_decode(entry, outputs))

    def feedback(self, request_id: str, quality: float) -> dict:
        """Report how good an answer was (0..1); the trust of (model, context) moves towards it."""
        try:
            quality = float(quality)
        except (TypeError, ValueError):
            raise InputError(f"quality must be a number, got {quality!r}", "pass a value in [0, 1]") from None
        if not 0.0 <= quality <= 1.0:
            raise InputError(f"quality {quality} is outside [0, 1]", "pass a value in [0, 1], e.g. char accuracy")
        item = self.state.take_answered(request_id)
        if item is None:
            raise UnknownRequestError(f"no answered request '{request_id}' awaits feedback", "pass the request_id an infer returned, once")
        model, context = item
        trust = self.trust.update(model, context, quality)
        self.metrics.quality(quality)
        return {"request_id": request_id, "model": model, "context": context, "trust": trust}

    def prefetch(self, *, key: str | None = None, context: str | None = None, family: str | None = None, model: str | None = None) -> str:
        """A hint that requests like this are coming: load the policy's choice in the background."""
        request = Request(inputs=None, key=key, context=context or key or family or "default", family=family, model=model)
        entry, pinned = self.state.pin_cold(lambda: self._rank(request, {}))
        if not pinned:
            return entry.id

        def load() -> None:
            try:
                self.residency.bring_in(entry, count="prefetches")
            except (Failed, GfedgeError):
                pass  # a hint: the failure is in the model's status
            finally:
                self.residency.unpin(entry)

        threading.Thread(target=load, name=f"gfedge-prefetch-{entry.id}", daemon=True).start()
        return entry.id

    # ---- explicit control ----

    def load(self, model: str) -> dict:
        """Load one model now (a quarantined one is retried, and its bundle checked again)."""
        entry = self.state.pin(model)
        try:
            self.residency.bring_in(entry, count="explicit_loads")
        except Failed as exc:
            raise GfedgeError(f"model '{model}' failed to load: {exc}", "see its reason in the status; re-export the bundle") from None
        finally:
            self.residency.unpin(entry)
        return self.describe(model)

    def unload(self, model: str) -> dict:
        """Unload one idle model and measure what came back."""
        self.residency.release(self.state.detach_idle(model))
        return self.describe(model)

    def unload_all(self) -> None:
        self.residency.release(self.state.detach_all_idle())

    def close(self) -> None:
        self.unload_all()

    def trim(self) -> None:
        """Hand memory that finished requests freed back to the OS (after a large request body)."""
        self.residency.trim()

    def set_power(self, *, low: bool) -> None:
        """Low-power state: sage weighs cost (swaps and model size) more, so cheap models win."""
        self.low_power = bool(low)

    # ---- registration ----

    def scan(self) -> dict:
        """Register new or changed bundle folders, drop removed ones, rescan key folders."""
        with self._scan_lock:
            seen = {path.name: path for path in catalog.bundle_dirs(self.folder)}
            added, changed = [], []
            for name, path in seen.items():
                sig = catalog.signature(path)
                if self.state.is_current(name, sig):
                    continue
                known = name in {e.id for e in self.state.entries()}
                self._install(catalog.register(path, sig))  # hashes every file: outside the lock
                (changed if known else added).append(name)
            removed, victims = self.state.drop_missing(set(seen))
            self.residency.release(victims)
            self.keyring.rescan()
        return {"added": added, "changed": changed, "removed": removed}

    def _install(self, entry: Entry) -> None:
        self.trust.forget(entry.id)  # what was learned belongs to the bundle that was there
        if entry.bundle is not None:
            overall, by_key = priors_from_manifest(entry.manifest)
            self.trust.set_priors(entry.id, overall=overall, by_context=by_key)
            remembered = self.book.get(entry.manifest_sha)
            if remembered:
                entry.measured_bytes, entry.load_seconds = remembered["measured_bytes"], remembered["load_seconds"]
                entry.peak_bytes = remembered.get("peak_bytes")
        self.residency.release(self.state.install(entry))

    def _warm_up(self) -> None:
        """Pay onnxruntime's one-time process costs (with golden inputs) before the baseline is read."""
        healthy = [e for e in self.state.entries() if e.bundle is not None]
        if not healthy:
            return
        try:
            session = self.residency.new_session(min(healthy, key=lambda e: e.estimate_bytes))
            del session
        except Exception:  # the real load will quarantine it with the reason
            pass

    def _rank(self, request: Request, tried: dict[str, str]):
        return self.chooser.rank(request, tried, low_power=self.low_power)

    # ---- status ----

    def accounted_bytes(self) -> int:
        return self.state.accounted_bytes()

    def measured_bytes(self) -> int:
        return self.residency.measured_bytes()

    def describe(self, model: str) -> dict:
        return report.describe(self.state, self.trust, self.keyring, model)

    def status(self) -> dict:
        return report.status(self)

    def keys_status(self) -> dict:
        return report.keys_status(self.state, self.keyring)

    def add_key_folder(self, folder: Path) -> dict:
        """Hot-add a key folder: resident sessions and later loads look there too."""
        self.keyring.add_folder(Path(folder))
        for entry in self.state.entries():
            session = entry.session
            if session is not None:
                session.keys.add_folder(Path(folder))
        return self.keys_status()


def _decode(entry: Entry, outputs: dict[str, np.ndarray]) -> str | None:
    vocab = entry.manifest.task.vocab
    if not vocab or "logits" not in outputs:
        return None
    return "".join(vocab[i] for i in np.asarray(outputs["logits"]).argmax(-1).reshape(-1))
