"""Run a bundle with onnxruntime, without torch.

`Session` opens a checked bundle, creates an onnxruntime session with the target profile's
provider order (reporting which providers were actually used), validates inputs against the
manifest and binds the latent key input from the key cache, so switching keys rebuilds nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from geofractal_edge._lazy import require
from geofractal_edge.artifacts import Bundle, open_bundle
from geofractal_edge.errors import BundleError
from geofractal_edge.runtimes.compat import ProviderPlan, plan_providers
from geofractal_edge.runtimes.binding import KeyedRunner
from geofractal_edge.runtimes.ort_cache import provider_options


class Session(KeyedRunner):
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
        self._bind_keys(bundle, key_capacity=key_capacity)

    @property
    def fallbacks(self) -> tuple[str, ...]:
        """Profile providers this host could not give us."""
        return self.plan.missing

    def _execute(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o["name"] for o in self.manifest.outputs]
        return dict(zip(names, self._session.run(names, feeds)))


def load(path: Path | str, **options) -> Session:
    """Open, check and load a bundle directory."""
    return Session(open_bundle(Path(path)), **options)
