"""A target profile: what one kind of device is, as data. No torch, no device branches."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from geofractal_edge.errors import GfedgeError
from geofractal_edge.targets.precisions import PRECISIONS

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    precisions: tuple[str, ...]
    default_precision: str
    ort_providers: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    gpu: str = ""
    sm: str | None = None  # CUDA compute capability, "8.7"; None for a CPU-only target
    memory_gib: float | None = None  # None: measured on the host at run time
    memory_shared: bool = False  # one pool for CPU and GPU (Jetson)
    reserve_mib: int = 0  # kept back for the OS and the application in that pool
    budget_fraction: float = 0.9  # of what is left after the reserve
    dla_cores: int = 0
    dla_precisions: tuple[str, ...] = ()
    tensorrt_version: str | None = None  # the TensorRT the device runs; None: no TensorRT
    jetpack: str | None = None
    workspace_mib: int | None = None  # TensorRT builder workspace cap
    builder_optimization_level: int = 3
    # Routed (TriX) export: compute every tile and select up to this many tiles, gather by route above.
    compute_all_max_tiles: int = 8
    sources: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def sm_tuple(self) -> tuple[int, int] | None:
        if self.sm is None:
            return None
        major, minor = self.sm.split(".")
        return int(major), int(minor)

    @property
    def tensorrt_major(self) -> int | None:
        return None if self.tensorrt_version is None else int(self.tensorrt_version.split(".")[0])

    def budget_bytes(self, *, host_total_bytes: int | None = None) -> int:
        """The runtime's memory budget: (pool - reserve) x fraction.

        A profile without a fixed memory size (host-cpu) uses the host's measured total.
        """
        if self.memory_gib is not None:
            pool = int(self.memory_gib * GIB)
        elif host_total_bytes is not None:
            pool = host_total_bytes
        else:
            raise GfedgeError(f"target {self.name} has no fixed memory size", "pass the host's measured memory")
        return max(0, int((pool - self.reserve_mib * MIB) * self.budget_fraction))

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["tensorrt_major"] = self.tensorrt_major
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TargetProfile:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - {"tensorrt_major"})
        if unknown:
            raise GfedgeError(f"target profile has unknown fields {unknown}", f"allowed fields: {sorted(names)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
        return cls(**kwargs)


def _validate(p: TargetProfile) -> None:
    for field_name in ("precisions", "dla_precisions"):
        bad = [x for x in getattr(p, field_name) if x not in PRECISIONS]
        if bad:
            raise GfedgeError(f"target {p.name}: {field_name} {bad} cannot be exported", f"remove them; {field_name} may list only {', '.join(PRECISIONS)}")
    if p.default_precision not in p.precisions:
        raise GfedgeError(f"target {p.name}: default precision {p.default_precision} is not allowed", "add it to precisions")
    if p.dla_cores and not p.dla_precisions:
        raise GfedgeError(f"target {p.name}: DLA cores without DLA precisions", "set dla_precisions")
    if p.tensorrt_version is not None and (p.sm is None or p.workspace_mib is None):
        raise GfedgeError(f"target {p.name}: TensorRT needs sm and workspace_mib", "add them to the profile")
    if not p.ort_providers:
        raise GfedgeError(f"target {p.name}: no onnxruntime providers", "list at least CPUExecutionProvider")
