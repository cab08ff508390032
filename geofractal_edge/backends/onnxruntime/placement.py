"""Which onnxruntime provider actually ran each kernel, measured from one profiled run.

onnxruntime reports only in verbose logs which nodes a provider handed on (onnxruntime#17434,
#29669), so the report is measured: the bundle's first golden case runs once in a profiling
session created as the runner's was, and each kernel event names its provider.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from geofractal_edge.artifacts import Bundle
from geofractal_edge.backends.inputs import leading_dim
from geofractal_edge.backends.onnxruntime.loader import ProviderPlan, create_session, provider_options
from geofractal_edge.backends.placement import PlacementReport
from geofractal_edge.errors import BundleError


def measured_placement(bundle: Bundle, plan: ProviderPlan) -> PlacementReport:
    """The placement of a session made with `plan`, measured on the bundle's first golden case."""
    kernels, registered = measure(bundle, provider_options(bundle, plan.chosen), golden_feeds(bundle))
    return PlacementReport(
        target=bundle.manifest.target.name, requested=plan.requested, available=plan.available, registered=registered, kernels=kernels
    )


def measure(bundle: Bundle, providers: list, feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, int], tuple[str, ...]]:
    """Run the bundle's graph once in a profiled onnxruntime session: (kernels per provider, providers kept)."""
    with tempfile.TemporaryDirectory(prefix="gfedge-placement-") as tmp:
        session, _codes = create_session(bundle, providers, profile_prefix=str(Path(tmp) / "profile"))
        session.run(None, dict(feeds))
        counts = kernels_by_provider(Path(session.end_profiling()))
        return counts, tuple(session.get_providers())


def kernels_by_provider(profile: Path) -> dict[str, int]:
    """Count the kernels each provider ran in an onnxruntime profile (one event per kernel run)."""
    events = json.loads(Path(profile).read_text(encoding="utf-8"))
    nodes = {
        e["name"].removesuffix("_kernel_time"): e["args"]["provider"]
        for e in events
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and "provider" in e.get("args", {})
    }
    return dict(Counter(nodes.values()))


def batch_feeds(bundle: Bundle, batch: int | None = None) -> tuple[dict[str, np.ndarray], str | None]:
    """(the first golden case's inputs, its key name): a real input the graph accepts. `batch`: the leading dynamic
    dimension sliced or tiled to it, as `gfedge bench` times it; None: the case as recorded."""
    cases = bundle.golden_cases()
    if not cases:
        raise BundleError(f"bundle {bundle.path} has no golden cases to make inputs from", "re-export it with `gfedge export`")
    case = cases[0]
    if batch is None:
        return dict(case.inputs), case.key
    dim = leading_dim(bundle.manifest.graph)[0]
    feeds = {}
    for spec in bundle.manifest.graph.data_inputs:
        array = case.inputs[spec.name]
        if dim is not None and spec.shape and spec.shape[0] == dim:
            array = np.ascontiguousarray(np.take(array, np.arange(batch) % array.shape[0], axis=0))  # slice or tile on axis 0
        feeds[spec.name] = array
    return feeds, case.key


def golden_feeds(bundle: Bundle, *, batch: int | None = None) -> dict[str, np.ndarray]:
    """`batch_feeds` with the case's key vector bound."""
    feeds, key = batch_feeds(bundle, batch)
    key_input = bundle.manifest.graph.key_input
    if key_input is not None and key is not None:
        feeds[key_input.name] = bundle.key(key).vector
    return feeds
