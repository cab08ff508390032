"""int4: weight-only, blocked, symmetric INT4 in standard `DequantizeLinear` (opset 21), zero point 0.

That is the INT4 dialect TensorRT reads (ORT's `MatMulNBits` contrib op is not). Uses onnxruntime's
`MatMulNBitsQuantizer` in QDQ mode; it reads MatMul only, so Gemms are rewritten first, and the
duplicate dequantize nodes it emits for a weight shared by several matmuls are merged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx

from geofractal_edge.errors import GfedgeError
from geofractal_edge.export.passes import dedupe_producers, gemm_to_matmul
from geofractal_edge.export.quantize.base import QuantConfig, QuantContext, register
from geofractal_edge.export.quantize.islands import consumers


@dataclass(frozen=True)
class Int4Config(QuantConfig):
    precision: ClassVar[str] = "int4"
    block_size: int = 16  # 32 lost 3.3 points of Atlas char accuracy, 16 lost 1.2 (limit 2)
    symmetric: bool = True  # zero point 0, as TensorRT requires
    format: str = "qdq"  # the only form: standard DequantizeLinear, not ORT's MatMulNBits

    def __post_init__(self) -> None:
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise GfedgeError(f"int4 block_size {self.block_size} is not a power of two >= 16", "use 16, 32, 64 or 128")
        if self.format != "qdq":
            raise GfedgeError(f"int4 format {self.format!r} is not supported", 'use format = "qdq"')


@register(Int4Config)
def to_int4(model: onnx.ModelProto, config: Int4Config, context: QuantContext) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization import matmul_nbits_quantizer as mq

    algo = mq.DefaultWeightOnlyQuantConfig(
        block_size=config.block_size, is_symmetric=config.symmetric, quant_format=QuantFormat.QDQ
    )
    kept = context.spec.unquantized
    model = gemm_to_matmul(model, keep=kept)
    skip = consumers(model, kept)
    quantizer = mq.MatMulNBitsQuantizer(model, algo_config=algo, nodes_to_exclude=skip)
    # It raises the opset to 21 (INT4 needs it) and warns that this "may" be invalid: the ops in our
    # graphs mean the same in 21, and the quantize step runs the full ONNX checker afterwards.
    quantizer.process()
    return dedupe_producers(quantizer.model.model)
