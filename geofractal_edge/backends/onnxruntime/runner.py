"""Run a bundle with onnxruntime, without torch.

`Session` opens a checked bundle, creates an onnxruntime session with the target profile's
provider order (reporting which providers were actually used), validates inputs against the
manifest and binds the latent key input from the key cache, so switching keys rebuilds nothing.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np

from geofractal_edge.artifacts import Bundle, open_bundle
from geofractal_edge.backends.base import Runner
from geofractal_edge.backends.onnxruntime.loader import ProviderPlan, create_session, engine_cache_id, plan_providers, provider_options
from geofractal_edge.backends.onnxruntime.placement import measured_placement
from geofractal_edge.backends.placement import PlacementReport


class Session(Runner):
    def __init__(self, bundle: Bundle, *, providers: tuple[str, ...] | None = None, key_capacity: int = 64) -> None:
        super().__init__(bundle, key_capacity=key_capacity)
        self.plan: ProviderPlan = plan_providers(bundle, override=providers)
        options = provider_options(bundle, self.plan.chosen)
        started = time.perf_counter()
        self._session, self._codes = create_session(bundle, options)
        self.load_seconds = time.perf_counter() - started
        self.providers_used = tuple(self._session.get_providers())
        self.cache_key = engine_cache_id(options)

    @property
    def fallbacks(self) -> tuple[str, ...]:
        """Profile providers this host could not give us."""
        return self.plan.missing

    @functools.cached_property
    def placement(self) -> PlacementReport:
        """Measured once, from one profiled run of the bundle's first golden case."""
        return measured_placement(self.bundle, self.plan)

    def close(self) -> None:
        self._session, self._codes = None, {}
        super().close()

    def _execute(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self.manifest.graph.output_names
        return dict(zip(names, self._session.run(names, feeds)))


def load(path: Path | str, **options) -> Session:
    """Open, check and load a bundle directory: `load(path).run({"x": array})`."""
    return Session(open_bundle(Path(path)), **options)
