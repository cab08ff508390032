"""Is this bundle runnable on this host, and with which providers? Decided before loading."""

from __future__ import annotations

from dataclasses import dataclass

from geofractal_edge._lazy import require
from geofractal_edge.artifacts import Bundle
from geofractal_edge.errors import BundleError


@dataclass(frozen=True)
class ProviderPlan:
    requested: tuple[str, ...]  # the target profile's order
    available: tuple[str, ...]  # what this onnxruntime build offers
    chosen: tuple[str, ...]  # requested and available, in order

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(p for p in self.requested if p not in self.available)

    @property
    def preferred(self) -> str:
        return self.requested[0]


def plan_providers(bundle: Bundle, *, override: tuple[str, ...] | None = None) -> ProviderPlan:
    ort = require("onnxruntime")
    requested = tuple(override or bundle.manifest.target["ort_providers"])
    available = tuple(ort.get_available_providers())
    chosen = tuple(p for p in requested if p in available)
    if not chosen:
        raise BundleError(
            f"none of the providers {list(requested)} is available in this onnxruntime ({list(available)})",
            "install the onnxruntime build for this device, or export for a target this host can run",
        )
    return ProviderPlan(requested=requested, available=available, chosen=chosen)
