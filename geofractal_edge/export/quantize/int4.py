"""int4: weight-only, blocked, symmetric INT4 for every weight, in the target's weight dialect.

* ``ort`` (onnxruntime runs the bundle): matrix weights become ``MatMulNBits`` and embedding tables
  ``GatherBlockQuantized`` (onnxruntime's `MatMulNBitsQuantizer`, QOperator form), a collective's
  stacked [T, K, N] router weights one MatMulNBits per tower; the weights stay 4-bit in the session.
* ``qdq`` (TensorRT builds the bundle): standard blocked ``DequantizeLinear`` (opset 21) with zero
  point 0, TensorRT's INT4 form; the same quantizer in QDQ form for matrices, then a blocked DQ in
  front of every table and stacked weight.

In both, what the quantizers leave (conv filters, a sliced position table) gets a blocked
DequantizeLinear of its own, and the scales are stored as `scale_dtype` (float16: 1 bit per weight
at block 16 instead of 2). The spec's unquantized tensors and the fp32 feature stage stay float.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import onnx

from geofractal_edge.errors import GfedgeError
from geofractal_edge.export import lowbit
from geofractal_edge.export.passes import dedupe_initializers, dedupe_producers, gemm_to_matmul
from geofractal_edge.export.quantize import weights
from geofractal_edge.export.quantize.base import QuantConfig, QuantContext, register
from geofractal_edge.export.quantize.islands import consumers, feature_stage

SCALE_DTYPES = ("float16", "float32")
INT4_OPSET = 21  # INT4 tensors and blocked DequantizeLinear


@dataclass(frozen=True)
class Int4Config(QuantConfig):
    precision: ClassVar[str] = "int4"
    version: ClassVar[int] = 2  # 2: the form follows the target's weight dialect (1 had `format`, always "qdq"); scale_dtype
    block_size: int = 16  # 32 lost 3.3 points of Atlas char accuracy, 16 lost 1.2 (limit 2)
    symmetric: bool = True  # zero point 0, as TensorRT requires
    scale_dtype: str = "float16"  # how scales are stored; the graph casts them to its float type
    # "ort" dialect: MatMulNBits' accuracy_level. 0: float32 arithmetic; 4: int8 activations (AVX512-VNNI
    # here: MiniLM at 24 sentences 780 -> 414 ms, embeddings moved by <= 2.2e-3; tiny Atlas 3x slower).
    accuracy_level: int = 0

    def __post_init__(self) -> None:
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise GfedgeError(f"int4 block_size {self.block_size} is not a power of two >= 16", "use 16, 32, 64 or 128")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise GfedgeError(f"int4 accuracy_level {self.accuracy_level} is not one of onnxruntime's", "use 0 (float32) or 4 (int8 activations)")
        if self.scale_dtype not in SCALE_DTYPES:
            raise GfedgeError(f"int4 scale_dtype {self.scale_dtype!r} is not supported", f"use one of {', '.join(SCALE_DTYPES)}")


@register(Int4Config)
def to_int4(model: onnx.ModelProto, config: Int4Config, context: QuantContext) -> onnx.ModelProto:
    kept = context.spec.unquantized
    model = lowbit.require_opset(gemm_to_matmul(model, keep=kept), INT4_OPSET)
    skip = set(consumers(model, kept)) | set(feature_stage(model, context.spec.fp32_inputs))
    blocks = {"block_size": config.block_size, "symmetric": config.symmetric}
    if context.dialect == "ort":
        tables = weights.find(model, skip)["tables"]
        model = _quantizer(model, config, skip, gathers=tables, qdq=False)
        found = weights.find(model, skip)  # what the quantizer left in float
        model = weights.rewrite(model, found["stacked"], partial(weights.int4_per_tower, accuracy_level=config.accuracy_level, **blocks))
    else:
        model = _quantizer(model, config, skip, gathers=[], qdq=True)
        found = weights.find(model, skip)
        model = weights.rewrite(model, found["tables"], partial(weights.int4_dq, **blocks))
        model = weights.rewrite(model, found["stacked"], partial(weights.int4_dq, stacked=True, **blocks))
    model = weights.rewrite(model, found["leftovers"], partial(weights.int4_dq, **blocks))
    return weights.store_scales(model, config.scale_dtype)


def _quantizer(model: onnx.ModelProto, config: Int4Config, skip: set[str], *, gathers: list[str], qdq: bool) -> onnx.ModelProto:
    """onnxruntime's MatMulNBitsQuantizer on the 2-D MatMul weights (and, QOperator only, the named tables' Gathers)."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization import matmul_nbits_quantizer as mq

    tables = set(gathers)
    other_gathers = [n.name for n in model.graph.node if n.op_type == "Gather" and n.input[0] not in tables]
    algo = mq.DefaultWeightOnlyQuantConfig(
        block_size=config.block_size, is_symmetric=config.symmetric, quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
        accuracy_level=None if qdq else config.accuracy_level or None,
        op_types_to_quantize=("MatMul", "Gather") if tables else ("MatMul",), quant_axes=(("MatMul", 0), ("Gather", 1)),
    )
    quantizer = mq.MatMulNBitsQuantizer(model, algo_config=algo, nodes_to_exclude=sorted(skip) + other_gathers)
    quantizer.process()
    # A weight several matmuls share (Atlas iterates one block) is written once per matmul: keep one.
    return dedupe_initializers(dedupe_producers(quantizer.model.model))
