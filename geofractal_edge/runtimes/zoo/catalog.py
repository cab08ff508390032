"""The zoo's models as entries: registered from a folder, checked, described, matched to requests.

Every sub-folder of the zoo folder is a bundle, except `keys/` and hidden folders. Registering
checks the bundle completely (`open_bundle`: every hash, the format version); one that fails is
kept as a quarantined entry with the reason, so a corrupted bundle dropped into a serving zoo shows
up in the status instead of vanishing. A folder whose files change (size or mtime) is registered
again at the next scan, so a half-copied bundle recovers once the copy completes.

Registration is not trusted later: every load re-opens the bundle (`reopen`: every hash checked
again) and compares its manifest's sha256 with the one registered, because a byte can change on
disk without its size or mtime changing. A request's inputs become arrays through `Entry.feeds`,
which checks JSON lists' shapes against the declared bounds before it builds anything, and hands
back the arrays `Checked`: the model's runner does not check them again.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geofractal_edge.artifacts import Bundle, open_bundle
from geofractal_edge.artifacts.manifest import MANIFEST_HASH, TensorDecl
from geofractal_edge.backends.inputs import Checked, InputChecker
from geofractal_edge.errors import BundleError, GfedgeError
from geofractal_edge.runtimes.io import tensors_from_json

REGISTERED = "registered"  # checked, not loaded
LOADING = "loading"
RESIDENT = "resident"
QUARANTINED = "quarantined"
KEYS_FOLDER = "keys"


@dataclass(frozen=True)
class Request:
    """What a request needs from a model: its data inputs (names), a key, a family, or one model."""

    inputs: Mapping[str, Any] | None  # None: any inputs (prefetch hints)
    key: str | None = None
    context: str = "default"
    family: str | None = None
    model: str | None = None


@dataclass
class Entry:
    id: str
    path: Path
    signature: tuple
    bundle: Bundle | None = None
    manifest_sha: str = ""  # the manifest's sha256 when registered: names this exact bundle (memory book key)
    state: str = REGISTERED
    reason: str = ""
    session: Any = None  # runtimes.Session while resident
    pins: int = 0  # requests holding it; never evicted while > 0
    hits: int = 0
    loads: int = 0
    evictions: int = 0
    runs: int = 0
    failures: int = 0
    last_used: float = 0.0
    measured_bytes: int | None = None  # process delta of the last load, warm-up run included
    peak_bytes: int | None = None  # the last load's high-water mark above where it started (VmHWM), measured alone
    freed_bytes: int | None = None  # what the last unload gave back, measured
    load_seconds: float | None = None  # last measured load (session + warm-up run)
    run_lock: threading.Lock = field(default_factory=threading.Lock)  # the bound key is session state
    _checker: tuple | None = field(default=None, repr=False)  # (bundle, InputChecker) prepared for that bundle

    @property
    def manifest(self):
        return self.bundle.manifest

    @property
    def estimate_bytes(self) -> int:
        """The manifest's estimate: bytes of the model files (golden cases excluded)."""
        return self.bundle.model_bytes if self.bundle else 0

    @property
    def core(self) -> str:
        return self.manifest.model.core_sha256

    @property
    def key_dim(self) -> int:
        return self.manifest.keys.dim if self.manifest.keys else 0

    @property
    def takes_key(self) -> bool:
        return self.manifest.graph.key_input is not None

    @property
    def data_inputs(self) -> tuple[TensorDecl, ...]:
        return self.manifest.graph.data_inputs

    @property
    def default_key(self) -> str | None:
        return self.manifest.keys.default if self.manifest.keys else None

    @property
    def serviceable(self) -> bool:
        """Opened and not quarantined: a model the zoo may load and run (what "ready" means)."""
        return self.bundle is not None and self.state != QUARANTINED

    def accepts(self, request: Request, keyring) -> bool:
        """Does this model declare what the request needs (family, input names, key)?"""
        if self.bundle is None:
            return False
        if request.model is not None and request.model != self.id:
            return False
        if request.family is not None and request.family != self.manifest.family:
            return False
        if request.inputs is not None and set(request.inputs) != {i.name for i in self.data_inputs}:
            return False
        if request.key is None:
            return not self.takes_key or self.default_key is not None
        if not self.takes_key:
            return False
        return request.key in self.bundle.key_names() or keyring.find(request.key, core_sha256=self.core, dim=self.key_dim) is not None

    def feeds(self, inputs: Mapping[str, Any]) -> Checked:
        """A request's inputs as the arrays this model takes, `Checked`; InputError names the first problem.

        JSON lists are shape-checked against the declared bounds before an array is built, so a
        request far over a bound is refused without allocating it; arrays are checked as they are.
        This is the request's one full check (values and ranges included): the runner of this
        bundle accepts the `Checked` feeds without checking them again.
        """
        graph = self.manifest.graph
        listed = {name: value for name, value in inputs.items() if not isinstance(value, np.ndarray)}
        if listed:
            inputs = {**inputs, **tensors_from_json(listed, [d for d in graph.data_inputs if d.name in listed], graph.dim_ranges)}
        return self.checker.checked(inputs)  # copies, then checks names, dtypes, shapes, values, dims agreeing

    @property
    def checker(self) -> InputChecker:
        """The manifest's input checks, prepared once per bundle; the model's session is given this one (one checker per model)."""
        if self._checker is None or self._checker[0] is not self.bundle:
            graph = self.manifest.graph
            self._checker = (self.bundle, InputChecker(graph.data_inputs, graph.dim_ranges))
        return self._checker[1]

    def describe(self) -> dict:
        manifest = self.manifest if self.bundle else None
        return {
            "id": self.id,
            "state": self.state,
            "reason": self.reason,
            "family": manifest.family if manifest else None,
            "precision": manifest.precision if manifest else None,
            "target": manifest.target.name if manifest else None,
            "estimate_bytes": self.estimate_bytes,
            "measured_bytes": self.measured_bytes,
            "peak_bytes": self.peak_bytes,
            "freed_bytes": self.freed_bytes,
            "load_seconds": self.load_seconds,
            "pins": self.pins,
            "hits": self.hits,
            "loads": self.loads,
            "evictions": self.evictions,
            "runs": self.runs,
            "failures": self.failures,
            "providers": list(self.session.providers_used) if self.session is not None else [],
        }


def bundle_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and p.name != KEYS_FOLDER and not p.name.startswith("."))


def signature(path: Path) -> tuple:
    """Sizes and mtimes of every file: changes when a bundle is replaced, edited or still copying."""
    stamps = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        try:
            stat = file.stat()
        except OSError:
            continue
        stamps.append((file.relative_to(path).as_posix(), stat.st_size, stat.st_mtime_ns))
    return tuple(stamps)


class ChangedOnDisk(BundleError):
    """A registered bundle whose files no longer match what was registered."""


def register(path: Path, sig: tuple) -> Entry:
    """Check a bundle folder completely; a failing one becomes a quarantined entry with the reason."""
    try:
        bundle, sha = _open_checked(path)
        return Entry(id=path.name, path=path, signature=sig, bundle=bundle, manifest_sha=sha)
    except GfedgeError as exc:
        reason = exc.one_line()
    except Exception as exc:  # a manifest damaged in a way the reader does not name: still quarantine it
        reason = f"unreadable bundle ({type(exc).__name__}: {exc})"
    return Entry(id=path.name, path=path, signature=sig, state=QUARANTINED, reason=f"not registered: {reason}")


def reopen(entry: Entry) -> Bundle:
    """The entry's bundle checked again (every hash), refused with ChangedOnDisk if it is not the one registered."""
    fix = "restore or replace the bundle folder; it is registered again at the next scan once its files change"
    try:
        bundle, sha = _open_checked(entry.path)
    except GfedgeError as exc:
        raise ChangedOnDisk(f"changed on disk since registration: {exc.problem}", fix) from None
    if sha != entry.manifest_sha:
        raise ChangedOnDisk(f"changed on disk since registration: manifest sha256 {sha[:12]} is not the registered {entry.manifest_sha[:12]}", fix)
    return bundle


def _open_checked(path: Path) -> tuple[Bundle, str]:
    """`open_bundle` and the manifest sha256 it checked (read on both sides, so the two belong together)."""
    before = _manifest_sha(path)
    bundle = open_bundle(path)
    if _manifest_sha(path) != before:
        raise BundleError(f"bundle {path.name} changed while it was being checked", "wait until the copy has finished")
    return bundle, before


def _manifest_sha(path: Path) -> str:
    try:
        return (path / MANIFEST_HASH).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return ""
