"""int8: per-channel symmetric int8 weights; activations quantized either statically or dynamically.

* ``static`` (explicit Q/DQ, the form TensorRT's strongly typed builder takes): activation scales are
  calibrated on the family's calibration inputs with onnxruntime's `quantize_static`, symmetric
  (zero point 0). Only the spec's op types (matrix products) are quantized, so the feature stage is
  left alone, and of those only the ones with a weight operand: attention's activation x activation
  products stay float (on the TriX LM that lifted int8 route agreement from 98.90% to 99.17% in the
  worse layer, SQNR from 33.2 to 34.9 dB).
* ``dynamic`` (onnxruntime only): `quantize_dynamic` turns each MatMul with a weight into
  DynamicQuantizeLinear (uint8, the scale measured per call) + MatMulInteger, which onnxruntime's
  CPU provider fuses into one DynamicQuantizeMatMul (or MatMulIntegerToFloat) at load; no
  calibration. Gemm is rewritten as MatMul + Add first (the dynamic quantizer reads MatMul only).
* ``target``: whichever the target profile names (`TargetProfile.int8_activations`, chosen per
  target by benchmarks/int8_scheme.py); `for_target` resolves it before export, so a manifest
  always records static or dynamic. A model quantized with no target at hand gets static.

In both, what the quantizer leaves in float is then made int8 too (see weights.py), in standard ops
that both dialects read: an embedding table stays int8 in memory and each gathered row is cast and
scaled by its own scale; any other weight (conv filters, a sliced position table, a collective's
stacked router weights) gets a per-channel DequantizeLinear.

With `smooth_alpha` > 0 (left None: the family's spec's, which only the MiniLM encoder sets) the weight
products' inputs are smoothed first (smooth.py), from the calibration feeds: per input channel for
dynamic, input and output for static. The manifest records the alpha used.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

import onnx

from geofractal_edge.errors import GfedgeError
from geofractal_edge.export import lowbit
from geofractal_edge.export.passes import gemm_to_matmul
from geofractal_edge.export.quantize import weights
from geofractal_edge.export.quantize.base import QuantConfig, QuantContext, checked_tile_level, register, tile_level_for_target
from geofractal_edge.export.quantize.islands import consumers, feature_stage
from geofractal_edge.export.quantize.smooth import smooth
from geofractal_edge.models.spec import is_smooth_alpha
from geofractal_edge.targets.profile import INT8_ACTIVATIONS

CALIBRATE_METHODS = ("MinMax", "Entropy", "Percentile", "Distribution")  # onnxruntime's CalibrationMethod
ACTIVATIONS = (*INT8_ACTIVATIONS, "target")


@dataclass(frozen=True)
class Int8Config(QuantConfig):
    precision: ClassVar[str] = "int8"
    version: ClassVar[int] = 2  # 2: `activations` (1 was always static) and `reduce_range`
    per_channel: bool = True
    weight_symmetric: bool = True
    calibrate_method: str = "MinMax"  # static only
    # Products of two activations (attention's Q.K^T and P.V) stay float: only layers with weights are int8.
    weight_products_only: bool = True
    activations: str = "target"  # "static", "dynamic", or "target": the target profile's int8_activations
    # dynamic only: 7-bit weights. Needed on CPUs without VNNI (their u8 x s8 pair sums saturate), and measured here
    # (VNNI): 8-bit flipped one near-tie of 152 texts in the test text collective (0.66 points, gate 0.3) at SQNR
    # 44.2 dB; 7-bit: 42.8 dB, no flip; Atlas 37.0 -> 32.6, TriX 39.7 -> 38.4 dB, MiniLM 23.8 -> 22.2 dB, all above static.
    reduce_range: bool = True
    # SmoothQuant migration strength for the weight products' inputs (smooth.py), 0 <= alpha <= 1; 0: no smoothing.
    # None: the family's choice (`ExportSpec.smooth_alpha`: MiniLM 0.5, others 0), resolved by `for_spec` so the
    # manifest records it. A record written before this field existed reads as None: the spec's, as it was then.
    smooth_alpha: float | None = None
    # TriX's ternary tiles on onnxruntime targets: MatMulNBits' accuracy_level on their 2-bit products (export/ternary.py).
    # 0: float arithmetic, the tiles stay 2-bit in the session; 4: int8 activations: the wide TriX's int8 dispatch bundle
    # ran x0.54-0.64 of fp32's time at batch 1 (x0.87-0.88 with float tiles), but onnxruntime prepacks each tile to ~2.7x
    # its 2-bit bytes, model memory x1.54-1.63 of fp32's (benchmarks/RESULTS.md, seventeenth session). A record written
    # before this field existed reads 0, as its tiles ran.
    tile_accuracy_level: int = 0

    @property
    def tile_level(self) -> int:
        return self.tile_accuracy_level

    def __post_init__(self) -> None:
        checked_tile_level("int8", self.tile_accuracy_level)
        if self.smooth_alpha is not None:
            if not is_smooth_alpha(self.smooth_alpha):
                raise GfedgeError(f"int8 smooth_alpha {self.smooth_alpha!r} is not a number from 0 to 1",
                                  "use e.g. 0.5 (0: no smoothing), or leave it out for the family's choice")
            object.__setattr__(self, "smooth_alpha", float(self.smooth_alpha))  # a TOML 0 or 1 arrives as an int
        if self.calibrate_method not in CALIBRATE_METHODS:
            raise GfedgeError(f"int8 calibrate_method {self.calibrate_method!r} is unknown", f"use one of {', '.join(CALIBRATE_METHODS)}")
        if self.activations not in ACTIVATIONS:
            raise GfedgeError(f"int8 activations {self.activations!r} is unknown", f"use one of {', '.join(ACTIVATIONS)}")

    def for_target(self, profile) -> Int8Config:
        """This config with `activations = "target"` replaced by the profile's choice."""
        tile_level_for_target("int8", self.tile_accuracy_level, profile)
        if self.activations == "target":
            return dataclasses.replace(self, activations=profile.int8_activations)
        if self.activations == "dynamic" and profile.weight_dialect != "ort":
            raise dynamic_refused("int8 activations", f"target {profile.name} (weight_dialect {profile.weight_dialect!r})",
                                  'use activations = "static" (or "target") for this target')
        return self

    def for_spec(self, spec) -> Int8Config:
        """This config with `smooth_alpha = None` replaced by the family's choice (the spec's)."""
        if self.smooth_alpha is None:
            return dataclasses.replace(self, smooth_alpha=spec.smooth_alpha)
        return self


def dynamic_refused(setting: str, where: str, fix: str) -> GfedgeError:
    """The one-line error for dynamic int8 asked of a TensorRT target (`where`: the target or dialect, in words)."""
    return GfedgeError(f"{setting} 'dynamic' cannot run on {where}: TensorRT builds int8 from explicit Q/DQ only", fix)


@register(Int8Config)
def to_int8(model: onnx.ModelProto, config: Int8Config, context: QuantContext) -> onnx.ModelProto:
    config = config.for_spec(context.spec)
    dynamic = config.activations == "dynamic"
    if dynamic and context.dialect != "ort":
        raise dynamic_refused("int8 activations", f"the {context.dialect!r} weight dialect", 'use activations = "static" for a TensorRT target')
    if dynamic or config.smooth_alpha > 0:
        model = gemm_to_matmul(model, keep=context.spec.unquantized)
    if config.smooth_alpha > 0:
        model = smooth(model, context.calibration, alpha=config.smooth_alpha, outputs=not dynamic, skip=set(_excluded(model, config, context)))
    if dynamic:
        quantized = _with_file(model, lambda src, dst: _dynamic(src, dst, model, config, context))
    else:
        quantized = _with_file(model, lambda src, dst: _static(src, dst, model, config, context))
    skip = set(consumers(quantized, context.spec.unquantized)) | set(feature_stage(quantized, context.spec.fp32_inputs))
    found = weights.find(quantized, skip)
    quantized = weights.rewrite(quantized, found["tables"], weights.int8_table)
    if dynamic:  # stacked [T, K, N] weights: per tower, on the integer kernel like the 2-D ones
        quantized = weights.rewrite(quantized, found["stacked"], partial(weights.int8_per_tower, reduce_range=config.reduce_range))
        if found["stacked"]:
            lowbit.use_ms_domain(quantized)
        return weights.rewrite(quantized, found["leftovers"], weights.int8_dq)
    return weights.rewrite(quantized, found["stacked"] + found["leftovers"], weights.int8_dq)


def _with_file(model: onnx.ModelProto, run) -> onnx.ModelProto:
    """onnxruntime's quantizers read and write files: run(src, dst) in a temporary folder, load dst."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "float.onnx"), Path(tmp, "int8.onnx")
        onnx.save(model, src)
        run(str(src), str(dst))
        return onnx.load(dst)


def _static(src: str, dst: str, model: onnx.ModelProto, config: Int8Config, context: QuantContext) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        src, dst, _Reader(context.calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=config.per_channel,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QInt8,
        op_types_to_quantize=list(context.spec.quantize_op_types),
        nodes_to_exclude=_excluded(model, config, context),
        calibrate_method=CalibrationMethod[config.calibrate_method],
        extra_options={"WeightSymmetric": config.weight_symmetric, "ActivationSymmetric": True, "QuantizeBias": False},
    )


def _dynamic(src: str, dst: str, model: onnx.ModelProto, config: Int8Config, context: QuantContext) -> None:
    """MatMul only (Gemm is MatMul by now); embedding tables are left to weights.int8_table (a row scale each)."""
    _quantize_dynamic(src, dst, config, exclude=_excluded(model, config, context) + _batched(model))


def dynamic_matmuls(model: onnx.ModelProto, nodes, config: Int8Config) -> onnx.ModelProto:
    """The named MatMuls (2-D weights) in the dynamic int8 form, the rest of the graph as it is: int4's 8-bit
    weights on a target whose int8 is dynamic (quantize.int4). `config`: its per_channel, reduce_range, weight_symmetric."""
    matmuls = {n.name for n in model.graph.node if n.op_type == "MatMul"} - set(_batched(model))  # stacked: weights.int8_per_tower
    include = sorted(set(nodes) & matmuls)
    if not include:  # onnxruntime reads an empty list as "every node"
        return model
    return _with_file(model, lambda src, dst: _quantize_dynamic(src, dst, config, include=include))


def _quantize_dynamic(src: str, dst: str, config: Int8Config, *, include: list[str] | None = None, exclude: list[str] = ()) -> None:
    """onnxruntime's quantize_dynamic on MatMuls with a constant weight: `include` only (None: all), less `exclude`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        src, dst,
        op_types_to_quantize=["MatMul"],
        per_channel=config.per_channel,
        reduce_range=config.reduce_range,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=include,
        nodes_to_exclude=list(exclude),
        extra_options={"WeightSymmetric": config.weight_symmetric, "MatMulConstBOnly": True},
    )


def _batched(model: onnx.ModelProto) -> list[str]:
    """MatMuls with a weight of rank > 2 (a collective's stacked routers): onnxruntime's MatMulInteger takes
    per-column zero points of a 2-D weight only, so these are left to weights.int8_per_tower (one 2-D integer
    MatMul per tower) in the dynamic form, and to weights.int8_dq in the static one."""
    ranks = {i.name: len(i.dims) for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and ranks.get(n.input[1], 2) > 2]


def _excluded(model: onnx.ModelProto, config: Int8Config, context: QuantContext) -> list[str]:
    """Nodes left float: consumers of the spec's unquantized tensors, and (by config) activation x activation products."""
    excluded = consumers(model, context.spec.unquantized)
    if config.weight_products_only:
        constants = {i.name for i in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
        excluded += [n.name for n in model.graph.node
                     if n.op_type in context.spec.quantize_op_types and not any(i in constants for i in n.input[:2])]
    return excluded


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a fixed list of feeds."""

    def __init__(self, feeds) -> None:
        self._feeds = iter(list(feeds))

    def get_next(self):
        return next(self._feeds, None)
