"""The TensorRT builder settings a device needs to build its engine from the bundle's ONNX.

Derived from the target profile and the spec's dynamic dimension ranges; written into the manifest
so that `gfedge build` on the device (TensorRT cannot run here) needs nothing else.
"""

from __future__ import annotations

from geofractal_edge.models.spec import ExportSpec
from geofractal_edge.targets import TargetProfile

MIB = 1 << 20


def builder_settings(profile: TargetProfile, spec: ExportSpec, *, precision: str) -> dict | None:
    if profile.tensorrt_version is None:
        return None
    shapes = {
        t.name: {use: list(spec.validation_shape(t, use=use)) for use in ("min", "opt", "max")}
        for t in spec.inputs
    }
    dla_ok = profile.dla_cores > 0 and precision in profile.dla_precisions
    return {
        "tensorrt_version": profile.tensorrt_version,
        "tensorrt_major": profile.tensorrt_major,
        "sm": profile.sm,
        # Precision lives in the graph (fp16 tensors, explicit Q/DQ); TensorRT 11 has no weak typing.
        "strongly_typed": True,
        "workspace_bytes": profile.workspace_mib * MIB,
        "builder_optimization_level": profile.builder_optimization_level,
        "optimization_profiles": [shapes],
        "dla": {"available_cores": profile.dla_cores, "allowed_for_precision": dla_ok, "use": False,
                "why_not": "DLA runs conv-like blocks; this graph is matrix products, which fall back to the GPU"},
    }
