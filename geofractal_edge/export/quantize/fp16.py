"""fp16: weights and activations in half precision, inputs and outputs kept float32.

The feature stage of the spec's `fp32_inputs` stays float32 (see islands.py). Uses onnxruntime's
own float16 converter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx

from geofractal_edge.export.passes import toposort
from geofractal_edge.export.quantize.base import QuantConfig, QuantContext, register
from geofractal_edge.export.quantize.islands import feature_stage


@dataclass(frozen=True)
class Fp16Config(QuantConfig):
    precision: ClassVar[str] = "fp16"
    keep_io_types: bool = True


@register(Fp16Config)
def to_fp16(model: onnx.ModelProto, config: Fp16Config, context: QuantContext) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    keep = feature_stage(model, context.spec.fp32_inputs)
    originals = {init.name: init for init in model.graph.initializer}
    converted = toposort(convert_float_to_float16(model, keep_io_types=config.keep_io_types, node_block_list=keep))
    _restore_fp32_constants(converted, originals, set(keep))
    _drop_round_trips(converted)
    del converted.graph.value_info[:]  # stale float32 annotations; shape inference redoes them
    return converted


def _restore_fp32_constants(model: onnx.ModelProto, originals: dict, keep: set[str]) -> None:
    """The converter casts every initializer to fp16, also those only the fp32 stage reads (Atlas's
    frequencies, up to ~pi*N, lose whole radians of phase in fp16). Give that stage fp32 copies."""
    inits = {init.name: init for init in model.graph.initializer}
    copies: dict[str, str] = {}
    for node in model.graph.node:
        if node.name not in keep:
            continue
        for i, name in enumerate(node.input):
            init = inits.get(name)
            if init is None or init.data_type != onnx.TensorProto.FLOAT16 or name not in originals:
                continue
            if name not in copies:
                copy = onnx.TensorProto()
                copy.CopyFrom(originals[name])
                copy.name = f"{name}.fp32"
                model.graph.initializer.append(copy)
                copies[name] = copy.name
            node.input[i] = copies[name]


def _drop_round_trips(model: onnx.ModelProto) -> None:
    """The converter casts to fp16 and straight back to fp32 around the fp32 stage (graph inputs too):
    x in [0, 1] rounded to 11 bits merges neighbouring Atlas positions. A cast to fp32 whose input was
    just cast to fp16 from X is replaced by X itself: exact, and the types still agree."""
    producer = {n.output[0]: n for n in model.graph.node if n.op_type == "Cast"}
    to = lambda n: next(a.i for a in n.attribute if a.name == "to")  # noqa: E731
    rewire = {}
    for node in model.graph.node:
        if node.op_type == "Cast" and to(node) == onnx.TensorProto.FLOAT:
            half = producer.get(node.input[0])
            if half is not None and to(half) == onnx.TensorProto.FLOAT16:
                rewire[node.output[0]] = half.input[0]
    for node in model.graph.node:
        for i, value in enumerate(node.input):
            if value in rewire:
                node.input[i] = rewire[value]
