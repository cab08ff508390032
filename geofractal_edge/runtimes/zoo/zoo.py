"""The zoo: one runtime serving many bundles under a measured memory budget.

A request is matched to candidates (models whose family, inputs and keys fit it), ranked by the
policy, and served by the first that loads and runs: `select` pins the model (a pinned model is
never evicted), `bring_in` makes room by evicting unpinned models in the policy's order and loads
it, `run` binds the key and runs, `unpin` lets go. So load -> run -> unload is atomic per request.
A model that fails to load or run is quarantined with the reason and the request moves on.

Memory is measured, not guessed (see residency.py): each load's process delta, growth from new
input shapes, and what each unload gives back, next to the manifest's estimate. Measured costs are
remembered per manifest hash in `<zoo>/.gfedge-measured.json`, so a restarted zoo admits models
correctly. Thread-safe: one lock guards the bookkeeping, waits use its condition.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geofractal_edge.errors import GfedgeError, InputError
from geofractal_edge.runtimes.zoo import catalog
from geofractal_edge.runtimes.zoo.catalog import LOADING, QUARANTINED, REGISTERED, RESIDENT, Entry, Request
from geofractal_edge.runtimes.zoo.errors import BusyError, ModelTooLargeError, NoCandidateError, UnknownModelError, UnknownRequestError
from geofractal_edge.runtimes.zoo.keyring import KeyRing
from geofractal_edge.runtimes.zoo.memory import MemoryBook, Meter, allocator_stats, meminfo_bytes, trim
from geofractal_edge.runtimes.zoo.metrics import Metrics
from geofractal_edge.runtimes.zoo.policy import View, make_policy
from geofractal_edge.runtimes.zoo.residency import Failed, Residency
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


class Zoo(Residency):
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
        self.budget_bytes = int(budget_bytes) if budget_bytes is not None else self.profile.budget_bytes(host_total_bytes=meminfo_bytes("MemTotal"))
        self.max_loaded = max_loaded  # a cap on resident models besides the bytes (like OLLAMA_MAX_LOADED_MODELS)
        self.policy = make_policy(policy, **(policy_options or {}))
        self.trust = TrustTable()
        self.metrics = Metrics()
        self.meter = Meter(memory_shared=self.profile.memory_shared)
        own_keys = self.folder / catalog.KEYS_FOLDER
        self.keyring = KeyRing(([own_keys] if own_keys.is_dir() else []) + [Path(f) for f in key_folders])
        self.key_capacity = key_capacity
        self.swap_scale_s = swap_scale_s
        self.wait_s = wait_s
        self.providers = providers
        self.low_power = False
        self.book = MemoryBook(self.folder / MEMORY_BOOK)
        self._models: dict[str, Entry] = {}
        self._cond = threading.Condition(threading.RLock())
        self._load_lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._reserved = 0
        self._in_flight = 0  # runs and loads now: run growth is attributed only to a run that was alone
        self._started = 0
        self._last_feeds: dict[tuple, tuple[dict, str | None]] = {}  # input names -> last request's (feeds, key)
        self._pending: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._demand: deque[tuple[str, frozenset]] = deque(maxlen=64)
        self._ids = itertools.count(1)
        self.scan()
        if warm:
            self._warm_up()
        trim()
        self.baseline = self.meter.read()

    # ---- requests ----

    def infer(self, inputs, *, key: str | None = None, context: str | None = None, family: str | None = None,
              model: str | None = None, request_id: str | None = None) -> Answer:
        """Serve one request with the best candidate that loads and runs."""
        started = time.perf_counter()
        request = Request(inputs=dict(inputs), key=key, context=context or key or family or "default", family=family, model=model)
        tried: dict[str, str] = {}
        try:
            while True:
                entry, hit, fallback_from = self._select(request, tried)
                try:
                    swapped = False if hit else self._bring_in(entry, count="swaps")
                    outputs = self._run(entry, request)
                except (Failed, ModelTooLargeError) as exc:
                    tried[entry.id] = str(exc)
                    self.metrics.count("failures")
                    continue
                finally:
                    self._unpin(entry)
                break
        except GfedgeError:
            self.metrics.count("errors")
            raise
        seconds = time.perf_counter() - started
        request_id = request_id or f"r{next(self._ids):08d}"
        with self._cond:
            entry.runs += 1
            self._pending[request_id] = (entry.id, request.context)
            while len(self._pending) > 100_000:
                self._pending.popitem(last=False)
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
        with self._cond:
            item = self._pending.pop(request_id, None)
        if item is None:
            raise UnknownRequestError(f"no answered request '{request_id}' awaits feedback", "pass the request_id an infer returned, once")
        model, context = item
        trust = self.trust.update(model, context, quality)
        self.metrics.quality(quality)
        return {"request_id": request_id, "model": model, "context": context, "trust": trust}

    def prefetch(self, *, key: str | None = None, context: str | None = None, family: str | None = None, model: str | None = None) -> str:
        """A hint that requests like this are coming: load the policy's choice in the background."""
        request = Request(inputs=None, key=key, context=context or key or family or "default", family=family, model=model)
        with self._cond:
            entry = self._models[self._rank(request, {})[0].order[0]]
            if entry.state in (RESIDENT, LOADING):
                return entry.id
            entry.pins += 1

        def load() -> None:
            try:
                self._bring_in(entry, count="prefetches")
            except (Failed, GfedgeError):
                pass  # a hint: the failure is in the model's status
            finally:
                self._unpin(entry)

        threading.Thread(target=load, name=f"gfedge-prefetch-{entry.id}", daemon=True).start()
        return entry.id

    # ---- explicit control ----

    def load(self, model: str) -> dict:
        """Load one model now (a quarantined one is retried)."""
        with self._cond:
            entry = self._entry(model)
            if entry.state == QUARANTINED:
                if entry.bundle is None:
                    raise GfedgeError(f"model '{model}' is quarantined: {entry.reason}", "fix or replace the bundle folder; it is re-checked at the next scan")
                entry.state, entry.reason = REGISTERED, ""
            entry.pins += 1
        try:
            self._bring_in(entry, count="explicit_loads")
        except Failed as exc:
            raise GfedgeError(f"model '{model}' failed to load: {exc}", "see its reason in the status; re-export the bundle") from None
        finally:
            self._unpin(entry)
        return self.describe(model)

    def unload(self, model: str) -> dict:
        """Unload one idle model and measure what came back."""
        with self._cond:
            entry = self._entry(model)
            if entry.pins:
                raise BusyError(f"model '{model}' is serving {entry.pins} request(s)", "retry when it is idle")
            victims = [self._detach(entry)] if entry.state == RESIDENT else []
        self._release(victims)
        return self.describe(model)

    def unload_all(self) -> None:
        with self._cond:
            victims = [self._detach(e) for e in self._models.values() if e.state == RESIDENT and not e.pins]
        self._release(victims)

    def close(self) -> None:
        self.unload_all()

    def set_power(self, *, low: bool) -> None:
        """Low-power state: sage weighs cost (swaps and model size) more, so cheap models win."""
        self.low_power = bool(low)

    # ---- registration ----

    def scan(self) -> dict:
        """Register new or changed bundle folders, drop removed ones, rescan key folders."""
        with self._scan_lock:
            seen = {}
            for path in catalog.bundle_dirs(self.folder):
                seen[path.name] = path
            added, changed = [], []
            for name, path in seen.items():
                sig = catalog.signature(path)
                with self._cond:
                    old = self._models.get(name)
                    if old is not None and (old.signature == sig or old.pins or old.state == LOADING):
                        continue
                entry = catalog.register(path, sig)  # hashes every file: outside the lock
                self._install(entry, old)
                (changed if old is not None else added).append(name)
            removed = self._drop_missing(set(seen))
            self.keyring.rescan()
        return {"added": added, "changed": changed, "removed": removed}

    def _install(self, entry: Entry, old: Entry | None) -> None:
        victims = []
        with self._cond:
            if old is not None:
                self.trust.forget(old.id)
                if old.session is not None:
                    victims.append(self._detach(old))
            if entry.bundle is not None:
                overall, by_key = priors_from_manifest(entry.manifest.data)
                self.trust.set_priors(entry.id, overall=overall, by_context=by_key)
                remembered = self.book.get(entry.manifest_sha)
                if remembered:
                    entry.measured_bytes, entry.load_seconds = remembered["measured_bytes"], remembered["load_seconds"]
            self._models[entry.id] = entry
            self._models = dict(sorted(self._models.items()))
            self._cond.notify_all()
        self._release(victims)

    def _drop_missing(self, present: set[str]) -> list[str]:
        with self._cond:
            gone = [e for name, e in self._models.items() if name not in present and not e.pins and e.state != LOADING]
            victims = [self._detach(e) for e in gone if e.session is not None]
            for e in gone:
                del self._models[e.id]
        self._release(victims)
        return [e.id for e in gone]

    def _warm_up(self) -> None:
        """Pay onnxruntime's one-time process costs before the baseline is read."""
        healthy = [e for e in self._models.values() if e.bundle is not None]
        if not healthy:
            return
        entry = min(healthy, key=lambda e: e.estimate_bytes)
        try:
            session = self._new_session(entry)
            del session
        except Exception:  # the real load will quarantine it with the reason
            pass

    # ---- selection ----

    def _select(self, request: Request, tried: dict[str, str]) -> tuple[Entry, bool, str | None]:
        with self._cond:
            ranking, candidates = self._rank(request, tried)
            if not tried:
                self._demand.append((request.context, frozenset(e.id for e in candidates)))
            entry = self._models[ranking.order[0]]
            entry.pins += 1
            entry.last_used = time.monotonic()
            hit = entry.state == RESIDENT
            entry.hits += hit
        self.metrics.selected(hit=hit, fallback=ranking.fallback_from is not None)
        return entry, hit, ranking.fallback_from

    def _rank(self, request: Request, tried: dict[str, str]):
        candidates = self._candidates(request, tried)
        if not candidates and request.key is not None and request.key not in self.keyring.names():
            self.keyring.rescan()  # a key file may have been dropped in since the last scan
            candidates = self._candidates(request, tried)
        if not candidates:
            raise self._no_candidate(request, tried)
        held = self._held_bytes()
        views = [self._view(e, request.context, held) for e in candidates]
        return self.policy.rank(views, low_power=self.low_power), candidates

    def _candidates(self, request: Request, tried: dict[str, str]) -> list[Entry]:
        if request.model is not None and request.model not in self._models:
            raise UnknownModelError(f"no model '{request.model}' in the zoo", f"known models: {', '.join(self._models) or 'none'}")
        return [e for e in self._models.values() if e.state != QUARANTINED and e.id not in tried and e.accepts(request, self.keyring)]

    def _no_candidate(self, request: Request, tried: dict[str, str]) -> NoCandidateError:
        if tried:
            failed = "; ".join(f"{k}: {v}" for k, v in tried.items())
            return NoCandidateError(f"every candidate failed ({failed})", "see `gfedge ps`; fix or replace the failing bundles")
        wanted = [f"inputs {sorted(request.inputs)}" if request.inputs is not None else "", f"key '{request.key}'" if request.key else "",
                  f"family {request.family}" if request.family else "", f"model {request.model}" if request.model else ""]
        quarantined = [e.id for e in self._models.values() if e.state == QUARANTINED]
        keys = sorted({k for e in self._models.values() if e.bundle is not None for k in e.bundle.key_names()} | self.keyring.names())
        fix = f"known keys: {', '.join(keys) or 'none'}" + (f"; quarantined: {', '.join(quarantined)}" if quarantined else "")
        return NoCandidateError(f"no healthy model in the zoo takes {', '.join(w for w in wanted if w)}", fix)

    def _view(self, entry: Entry, context: str, held: int) -> View:
        resident = entry.state == RESIDENT
        expected = self._expected(entry)
        return View(
            id=entry.id, expertise=self.trust.get(entry.id, context), resident=resident,
            swap_cost=0.0 if resident or entry.state == LOADING else self._load_seconds(entry) / self.swap_scale_s + expected / max(1, self.budget_bytes),
            fits=resident or expected <= self.budget_bytes - held, bytes=expected, last_used=entry.last_used,
        )

    def _entry(self, model: str) -> Entry:
        if model not in self._models:
            raise UnknownModelError(f"no model '{model}' in the zoo", f"known models: {', '.join(self._models) or 'none'}")
        return self._models[model]

    # ---- status ----

    def describe(self, model: str) -> dict:
        with self._cond:
            entry = self._entry(model)
            info = entry.describe()
            info["expected_bytes"] = self._expected(entry) if entry.bundle is not None else None
        info["trust"] = self.trust.summary(model)
        info["keys"] = entry.bundle.key_names() if entry.bundle is not None else []
        if entry.bundle is not None and entry.takes_key:
            info["keys"] += sorted({k.name for k in self.keyring.keys() if k.core_sha256 == entry.core and k.dim == entry.key_dim} - set(info["keys"]))
        return info

    def status(self) -> dict:
        with self._cond:
            ids = list(self._models)
            accounted = self.accounted_bytes()
        reading = self.meter.read()
        return {
            "folder": str(self.folder),
            "policy": self.policy.name,
            "low_power": self.low_power,
            "target": self.profile.name,
            "memory_shared": self.profile.memory_shared,
            "budget_bytes": self.budget_bytes,
            "accounted_bytes": accounted,
            "measured_bytes": reading.counted() - self.baseline.counted(),
            "rss_bytes": reading.rss,
            "device_bytes": reading.device,
            "baseline_bytes": self.baseline.counted(),
            "allocator": allocator_stats(),
            "models": [m for m in (self._describe_if_present(i) for i in ids) if m is not None],
            "metrics": self.metrics.summary(),
        }

    def _describe_if_present(self, model: str) -> dict | None:
        try:
            return self.describe(model)
        except UnknownModelError:  # removed by a scan since the list was taken
            return None

    def keys_status(self) -> dict:
        with self._cond:
            entries = [e for e in self._models.values() if e.bundle is not None and e.takes_key]
        folder_keys, rejected = [], [{"path": p, "reason": r} for p, r in self.keyring.unreadable.items()]
        for key in self.keyring.keys():
            models = [e.id for e in entries if e.core == key.core_sha256 and e.key_dim == key.dim]
            if models:
                folder_keys.append({"name": key.name, "path": str(key.path), "models": models})
            else:
                rejected.append({"path": str(key.path), "reason": f"made for core {key.core_sha256[:12]} (dim {key.dim}); no model in this zoo has that core"})
        return {
            "folders": [str(f) for f in self.keyring.folders],
            "bundle_keys": {e.id: e.bundle.key_names() for e in entries},
            "folder_keys": folder_keys,
            "rejected": rejected,
        }

    def add_key_folder(self, folder: Path) -> dict:
        """Hot-add a key folder: resident sessions and later loads look there too."""
        self.keyring.add_folder(Path(folder))
        with self._cond:
            sessions = [e.session for e in self._models.values() if e.session is not None]
        for session in sessions:
            session.keys.add_folder(Path(folder))
        return self.keys_status()


def _decode(entry: Entry, outputs: dict[str, np.ndarray]) -> str | None:
    vocab = (entry.manifest.data.get("task") or {}).get("vocab")
    if not vocab or "logits" not in outputs:
        return None
    return "".join(vocab[i] for i in np.asarray(outputs["logits"]).argmax(-1).reshape(-1))
