"""Quantization schemes: `default_config(precision)` then `quantize(model, config, context)`."""

from geofractal_edge.export.quantize.base import QuantConfig, QuantContext, default_config, precisions, quantize

__all__ = ["QuantConfig", "QuantContext", "default_config", "precisions", "quantize"]
