"""Which provider actually ran the graph, and `--strict`, which makes any fallback an error.

onnxruntime drops a provider the host lacks and hands nodes a provider cannot run to the next
one, and says so only in verbose logs (onnxruntime#17434, #29669); TensorRT moves layers DLA cannot
run to the GPU without an error when GPU fallback is on (TensorRT DLA docs). The report names the
target's first choice, what this host offers, what the session kept, and, measured from one
profiled run, how many kernels each provider ran. For a TensorRT engine it carries the DLA
placement recorded at build. No torch.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geofractal_edge._lazy import require
from geofractal_edge.errors import BundleError, GfedgeError

ENGINE = "TensorRT engine"  # geofractal_edge's own TensorRT session running engine.plan
_INSTALL = {
    "TensorrtExecutionProvider": 'install onnxruntime-gpu and TensorRT: pip install "geofractal-edge[gpu,trt]", on Jetson the onnxruntime-gpu wheel for your JetPack',
    "CUDAExecutionProvider": 'install onnxruntime-gpu on a host with an NVIDIA GPU: pip install "geofractal-edge[gpu]", on Jetson the wheel for your JetPack',
    ENGINE: "build the engine on the device: gfedge build BUNDLE",
}


class PlacementError(GfedgeError):
    """--strict: part of the graph would run somewhere other than the target's first choice."""

    exit_code = 1  # a failed check, like a failed verify, not a usage error


@dataclass(frozen=True)
class PlacementReport:
    target: str
    requested: tuple[str, ...]  # the target profile's order; requested[0] is what it is built for
    available: tuple[str, ...]  # what this host offers
    registered: tuple[str, ...]  # what the session was created with and kept
    kernels: dict[str, int] = field(default_factory=dict)  # provider -> kernels run; {} if not measured
    dla: dict | None = None  # engine builds: DLA layers and the layers that fell back to the GPU

    @property
    def preferred(self) -> str:
        return self.requested[0]

    @property
    def ran_on(self) -> str:
        """The provider that ran most of the graph (the first one kept, when not measured)."""
        if self.kernels:
            return max(self.kernels, key=lambda p: (self.kernels[p], p == self.preferred))
        return self.registered[0] if self.registered else "nothing"

    @property
    def fallbacks(self) -> list[str]:
        """Every way in which the graph does not run where the target meant it to, in words."""
        found = []
        if self.preferred not in self.available:
            found.append(f"{self.preferred} is not available on this host")
        elif self.preferred not in self.registered:
            found.append(f"{self.preferred} was requested but the session did not keep it")
        total = sum(self.kernels.values())
        for provider, count in sorted(self.kernels.items(), key=lambda kv: (-kv[1], kv[0])):
            if provider != self.preferred and count:
                found.append(f"{count} of {total} kernels ran on {provider}")
        if self.dla and self.dla.get("gpu_fallback_layers"):
            moved = self.dla["gpu_fallback_layers"]
            shown = ", ".join(moved[:3]) + (", ..." if len(moved) > 3 else "")
            found.append(f"{len(moved)} of {self.dla['layers']} layers fell back from DLA to the GPU ({shown})")
        return found

    @property
    def clean(self) -> bool:
        return not self.fallbacks

    def line(self) -> str:
        total = sum(self.kernels.values())
        ran = f"{self.ran_on} ran {self.kernels[self.ran_on]}/{total} kernels" if self.kernels else f"{self.ran_on} (not measured)"
        tail = "; ".join(self.fallbacks) if self.fallbacks else f"as the target {self.target} intends"
        return f"placement: {ran}; {tail}"

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "preferred": self.preferred,
            "ran_on": self.ran_on,
            "requested": list(self.requested),
            "available": list(self.available),
            "registered": list(self.registered),
            "kernels": dict(self.kernels),
            "dla": self.dla,
            "fallbacks": self.fallbacks,
        }


def check_strict(report: PlacementReport) -> None:
    """Raise PlacementError naming the provider the target wants and where the graph would run."""
    if report.clean:
        return
    found = report.fallbacks
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    raise PlacementError(
        f"--strict: target {report.target} should run on {report.preferred}, but {found[0]}{more}; the graph would run on {report.ran_on}",
        f"{_INSTALL.get(report.preferred, f'install an onnxruntime build with {report.preferred}')}, or drop --strict to accept the fallback",
    )


def kernels_by_provider(profile: Path) -> dict[str, int]:
    """Count the kernels each provider ran in an onnxruntime profile (one event per kernel run)."""
    events = json.loads(Path(profile).read_text(encoding="utf-8"))
    nodes = {
        e["name"].removesuffix("_kernel_time"): e["args"]["provider"]
        for e in events
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and "provider" in e.get("args", {})
    }
    return dict(Counter(nodes.values()))


def measure(bundle, providers: list, feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, int], tuple[str, ...]]:
    """Run the bundle's graph once in a profiled onnxruntime session: (kernels per provider, providers kept)."""
    ort = require("onnxruntime")
    with tempfile.TemporaryDirectory(prefix="gfedge-placement-") as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        codes = {name: ort.OrtValue.ortvalue_from_numpy(c) for name, c in bundle.ternary_codes().items()}
        if codes:  # packed ternary weights, handed over as the Session does
            options.add_external_initializers(list(codes), list(codes.values()))
        session = ort.InferenceSession(str(bundle.model_path), sess_options=options, providers=providers)
        session.run(None, dict(feeds))
        counts = kernels_by_provider(Path(session.end_profiling()))
        return counts, tuple(session.get_providers())


def report_for(session, *, measured: bool = True) -> PlacementReport:
    """The placement of a loaded runtimes Session, measured on the bundle's first golden case.

    A session that reports its own placement (the TensorRT engine session) is asked directly.
    """
    if hasattr(session, "placement"):
        return session.placement
    from geofractal_edge.runtimes.ort_cache import provider_options

    bundle, plan = session.bundle, session.plan
    kernels: dict[str, int] = {}
    registered = tuple(session.providers_used)
    if measured:
        kernels, registered = measure(bundle, provider_options(bundle, plan.chosen), golden_feeds(bundle))
    return PlacementReport(
        target=bundle.manifest.target["name"], requested=plan.requested, available=plan.available, registered=registered, kernels=kernels
    )


def golden_feeds(bundle) -> dict[str, np.ndarray]:
    """The first golden case's inputs with its key vector bound: a real input the graph accepts."""
    cases = bundle.golden_cases()
    if not cases:
        raise BundleError(f"bundle {bundle.path} has no golden cases to measure placement with", "re-export it with `gfedge export`")
    case = cases[0]
    feeds = dict(case.inputs)
    key_input = next((i["name"] for i in bundle.manifest.inputs if i.get("role") == "key"), None)
    if key_input is not None and case.key is not None:
        feeds[key_input] = bundle.key(case.key).vector
    return feeds


def check_placement(session, *, strict: bool) -> PlacementReport:
    """The placement report of a loaded session; with `strict`, any fallback raises PlacementError (exit 1)."""
    report = report_for(session)
    if strict:
        check_strict(report)
    return report
