"""Quantization is a config in, a model out.

A scheme is a frozen, versioned config dataclass bound to its transform by `register`. A new scheme
adds a file that registers itself; nothing edits a switch. The config is recorded in the manifest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from geofractal_edge.errors import Bug, GfedgeError
from geofractal_edge.models.spec import ExportSpec


@dataclass(frozen=True)
class QuantContext:
    """What a transform may read besides the float model: the spec and calibration inputs."""

    spec: ExportSpec
    calibration: tuple[Mapping[str, np.ndarray], ...] = ()


@dataclass(frozen=True)
class QuantConfig:
    precision: str = "fp32"
    version: int = 1

    def to_dict(self) -> dict:
        return {"scheme": type(self).__name__, **dataclasses.asdict(self)}


Transform = Callable[[onnx.ModelProto, QuantConfig, QuantContext], onnx.ModelProto]
_REGISTRY: dict[str, tuple[type[QuantConfig], Transform]] = {}


def register(config_cls: type[QuantConfig]) -> Callable[[Transform], Transform]:
    precision = config_cls().precision

    def bind(transform: Transform) -> Transform:
        _REGISTRY[precision] = (config_cls, transform)
        return transform

    return bind


def precisions() -> Iterable[str]:
    _load_schemes()
    return tuple(_REGISTRY)


def default_config(precision: str) -> QuantConfig:
    _load_schemes()
    if precision not in _REGISTRY:
        raise GfedgeError(f"precision '{precision}' cannot be exported", f"use one of {', '.join(_REGISTRY)}")
    return _REGISTRY[precision][0]()


def quantize(model: onnx.ModelProto, config: QuantConfig, context: QuantContext) -> onnx.ModelProto:
    _load_schemes()
    from geofractal_edge.export.quiet import quiet

    _, transform = _REGISTRY[config.precision]
    with quiet():
        quantized = transform(model, config, context)
    try:
        onnx.checker.check_model(quantized, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise Bug(f"the {config.precision} graph is not valid ONNX: {str(exc).splitlines()[0]}") from exc
    return quantized


def _load_schemes() -> None:
    # Each scheme module registers itself on import.
    from geofractal_edge.export.quantize import fp16, fp32, int4, int8  # noqa: F401
