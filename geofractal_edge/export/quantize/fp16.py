"""fp16: weights and activations in half precision, inputs and outputs kept float32.

The feature stage of the spec's `fp32_inputs` stays float32 (see islands.py). Uses onnxruntime's
own float16 converter.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from geofractal_edge.export.passes import toposort
from geofractal_edge.export.quantize.base import QuantConfig, QuantContext, register
from geofractal_edge.export.quantize.islands import feature_stage


@dataclass(frozen=True)
class Fp16Config(QuantConfig):
    precision: str = "fp16"
    keep_io_types: bool = True


@register(Fp16Config)
def to_fp16(model: onnx.ModelProto, config: Fp16Config, context: QuantContext) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    keep = feature_stage(model, context.spec.fp32_inputs)
    converted = toposort(convert_float_to_float16(model, keep_io_types=config.keep_io_types, node_block_list=keep))
    del converted.graph.value_info[:]  # stale float32 annotations; shape inference redoes them
    return converted
