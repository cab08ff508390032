"""Quantization schemes: `default_config(precision)` or `QuantConfig.from_toml(path)`, then `quantize(model, config, context)`."""

from geofractal_edge.export.quantize.base import QuantConfig, QuantContext, default_config, precisions, quantize, register, schemes

__all__ = ["QuantConfig", "QuantContext", "default_config", "precisions", "quantize", "register", "schemes"]
