"""fp32: the traced graph as it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx

from geofractal_edge.export.quantize.base import QuantConfig, QuantContext, register


@dataclass(frozen=True)
class Fp32Config(QuantConfig):
    precision: ClassVar[str] = "fp32"


@register(Fp32Config)
def to_fp32(model: onnx.ModelProto, config: QuantConfig, context: QuantContext) -> onnx.ModelProto:
    return model
