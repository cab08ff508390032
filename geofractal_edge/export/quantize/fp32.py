"""fp32: the traced graph, with one onnxruntime-only rewrite.

On "ort" targets a stacked [T, K, N] weight read by a batched MatMul (a collective's routers) becomes one
2-D MatMul per tower (`weights.float_per_tower`): onnxruntime prepacks 2-D constant weights for its GEMM
kernel and not 3-D ones, which it packs again on every call. Measured on 16 towers of 288 x 1152, 1 thread:
x0.36-0.40 of the batched MatMul's time at 4 rows per tower, x1.00 at 256 (benchmarks/RESULTS.md). TensorRT
("qdq") graphs keep the batched form.
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


@register(Fp32Config)
def to_fp32(model: onnx.ModelProto, config: QuantConfig, context: QuantContext) -> onnx.ModelProto:
    if context.dialect != "ort":
        return model
    stacked = weights.find(model, set(consumers(model, context.spec.unquantized)))["stacked"]
    return weights.rewrite(model, stacked, weights.float_per_tower)
