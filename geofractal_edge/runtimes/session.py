"""Run a bundle with onnxruntime, without torch.

`Session` opens a checked bundle, creates an onnxruntime session with the target profile's
provider order (reporting which providers were actually used), validates inputs against the
manifest and binds the latent key input from the key cache, so switching keys rebuilds nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from geofractal_edge._lazy import require
from geofractal_edge.artifacts import Bundle, Key, open_bundle
from geofractal_edge.errors import BundleError, InputError
from geofractal_edge.runtimes.compat import ProviderPlan, plan_providers
from geofractal_edge.runtimes.inputs import check_inputs
from geofractal_edge.runtimes.ort_cache import provider_options
from geofractal_edge.runtimes.keys import KeyCache


class Session:
    def __init__(self, bundle: Bundle, *, providers: tuple[str, ...] | None = None, key_capacity: int = 64) -> None:
        ort = require("onnxruntime")
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.plan: ProviderPlan = plan_providers(bundle, override=providers)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Ternary codes live 2-bit packed in the bundle; the graph names them as external data.
        self._codes = {name: ort.OrtValue.ortvalue_from_numpy(codes) for name, codes in bundle.ternary_codes().items()}
        if self._codes:
            options.add_external_initializers(list(self._codes), list(self._codes.values()))
        started = time.perf_counter()
        try:
            self._session = ort.InferenceSession(str(bundle.model_path), sess_options=options, providers=provider_options(bundle, self.plan.chosen))
        except Exception as exc:  # onnxruntime raises its own untyped errors for unloadable graphs
            raise BundleError(f"onnxruntime cannot load {bundle.model_path.name}: {exc}", "re-export the bundle for this runtime") from exc
        self.load_seconds = time.perf_counter() - started
        self.providers_used = tuple(self._session.get_providers())
        self.keys = KeyCache(bundle, capacity=key_capacity)
        self._key_input = next((i["name"] for i in self.manifest.inputs if i.get("role") == "key"), None)
        self._data_specs = [i for i in self.manifest.inputs if i.get("role") != "key"]
        self._active: Key | None = None
        default = (self.manifest.keys or {}).get("default")
        if self._key_input and default:
            self.use_key(default)

    @property
    def fallbacks(self) -> tuple[str, ...]:
        """Profile providers this host could not give us."""
        return self.plan.missing

    @property
    def active_key(self) -> str | None:
        return None if self._active is None else self._active.name

    def use_key(self, key: str | Key) -> None:
        """Bind a key by name (bundle or key folders) or a Key already read and checked."""
        if self._key_input is None:
            raise InputError("this model takes no key", "drop --key")
        self._active = key if isinstance(key, Key) else self.keys.get(key)

    def run(self, inputs: Mapping[str, np.ndarray], *, key: str | Key | None = None) -> dict[str, np.ndarray]:
        if key is not None:
            self.use_key(key)
        feeds = dict(inputs)
        if self._key_input is not None and self._key_input in feeds:
            raise InputError(f"'{self._key_input}' is bound from the key cache", "pass --key NAME instead of the raw vector")
        check_inputs(feeds, self._data_specs)
        if self._key_input is not None:
            if self._active is None:
                raise InputError("no key is bound", f"pass a key: {', '.join(self.keys.names())}")
            feeds[self._key_input] = self._active.vector
        names = [o["name"] for o in self.manifest.outputs]
        return dict(zip(names, self._session.run(names, feeds)))


def load(path: Path | str, **options) -> Session:
    """Open, check and load a bundle directory."""
    return Session(open_bundle(Path(path)), **options)
