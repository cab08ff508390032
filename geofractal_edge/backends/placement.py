"""Where a runner's graph actually runs, and `--strict`, which makes any fallback an error.

onnxruntime drops a provider the host lacks and hands nodes a provider cannot run to the next
one, and says so only in verbose logs (onnxruntime#17434, #29669); TensorRT moves layers DLA cannot
run to the GPU without an error when GPU fallback is on (TensorRT DLA docs). The report names the
target's first choice, what this host offers, what the session kept, and, measured from one
profiled run, how many kernels each provider ran. For a TensorRT engine it carries the DLA
placement recorded at build. Each runner makes its own report (`runner.placement`; onnxruntime's
is measured in backends/onnxruntime/placement.py). No torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from geofractal_edge.errors import GfedgeError

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


def check_placement(runner, *, strict: bool) -> PlacementReport:
    """The placement report of a loaded runner; with `strict`, any fallback raises PlacementError (exit 1)."""
    report = runner.placement
    if strict:
        check_strict(report)
    return report
