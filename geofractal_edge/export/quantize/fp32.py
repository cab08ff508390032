"""fp32: the traced graph, with one onnxruntime-only rewrite.

On "ort" targets a stacked [T, K, N] weight read by a batched MatMul (a collective's routers) becomes one
2-D MatMul per tower (`weights.float_per_tower`): onnxruntime prepacks 2-D constant weights for its GEMM
kernel and not 3-D ones, which it packs again on every call. The 73 MB wide collective, 1 thread: p50 x0.52-0.59
of the batched form's at batch 1, x1.00-1.03 at 64 rows, 1.6-1.8 MiB more after the load and ~24 MiB more after
warm-up at 64 rows (per-tower slices of the activations; benchmarks/RESULTS.md). TensorRT ("qdq") graphs keep the
batched form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx

from geofractal_edge.export.quantize import weights
from geofractal_edge.export.quantize.base import QuantConfig, QuantContext, register
from geofractal_edge.export.quantize.islands import consumers


@dataclass(frozen=True)
class Fp32Config(QuantConfig):
    precision: ClassVar[str] = "fp32"


# Smaller tower slices stay batched: the shipped default collective (4 towers of 64 x 64) ran x1.07 of the batched
# form per tower (271 -> 290 us, 1 thread: the extra nodes cost more than the packing saves), the wide one (16 towers
# of 288 x 288 and 288 x 1152) x0.52. Any threshold between the two fits; none between was measured.
MIN_TOWER_ELEMENTS = 16384


@register(Fp32Config)
def to_fp32(model: onnx.ModelProto, config: QuantConfig, context: QuantContext) -> onnx.ModelProto:
    if context.dialect != "ort":
        return model
    stacked = weights.find(model, set(consumers(model, context.spec.unquantized)))["stacked"]
    dims = {i.name: i.dims for i in model.graph.initializer}
    large = [name for name in stacked if dims[name][1] * dims[name][2] >= MIN_TOWER_ELEMENTS]
    return weights.rewrite(model, large, weights.float_per_tower)
