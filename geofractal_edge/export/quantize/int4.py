"""int4: weight-only, blocked, symmetric INT4 for every weight, in the target's weight dialect.

* ``ort`` (onnxruntime runs the bundle): matrix weights become ``MatMulNBits`` and embedding tables
  ``GatherBlockQuantized`` (onnxruntime's `MatMulNBitsQuantizer`, QOperator form), a collective's
  stacked [T, K, N] router weights one MatMulNBits per tower; the weights stay 4-bit in the session.
* ``qdq`` (TensorRT builds the bundle): standard blocked ``DequantizeLinear`` (opset 21) with zero
  point 0, TensorRT's INT4 form; the same quantizer in QDQ form for matrices, then a blocked DQ in
  front of every table and stacked weight.

In both, what the quantizers leave (conv filters, a sliced position table) gets a blocked
DequantizeLinear of its own, and the scales are stored as `scale_dtype` (float16 halves their bytes
on disk; onnxruntime folds the Cast at load and holds them as float32, so in the ``ort`` dialect the
saving is the file's only). Weights per scale: the family's `int4_block_size` (16 or 32) unless the
config names one; TensorRT documents INT4 blocks of 64 and 128 only, so the ``qdq`` form at 16 or 32
is untested there. The spec's unquantized tensors and the fp32 feature stage stay float.

Mixed precision: the float weights that the outputs named in `int8_upstream_of` depend on are kept
at 8 bits, in the form `int8_form` names: ``dynamic`` (an ``ort`` target whose int8 is dynamic, host-cpu:
the int8 bundles' own form, per-channel int8 weights on onnxruntime's integer kernel with activations
quantized per call; 7-bit codes, `reduce_range`, as there) or ``weight_only`` (``ort``: MatMulNBits bits 8; ``qdq``: per-output-channel int8
DequantizeLinear); tables in every form: int8 rows gathered and scaled. On host-cpu MatMulNBits bits 8
ran the wide TriX model's four attention matrices in 22 ms of an 82 ms call at 16 windows against the
dynamic form's 7.5 ms (onnxruntime 1.32 profile, AVX-512 Xeon; benchmarks/RESULTS.md). A routed family names its routes there (its
spec's `int8_upstream_of`): a route is an argmax, and int4 noise in the weights before it flips
near-ties (TriX test model: 95.7% route agreement in the worse layer all-int4, against a 97% gate).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import onnx

from geofractal_edge.errors import GfedgeError
from geofractal_edge.export import lowbit
from geofractal_edge.export.passes import dedupe_initializers, dedupe_producers, gemm_to_matmul
from geofractal_edge.export.quantize import int8, weights
from geofractal_edge.export.quantize.base import QuantConfig, QuantContext, checked_tile_level, register, tile_level_for_target
from geofractal_edge.export.quantize.int8 import Int8Config
from geofractal_edge.export.quantize.islands import consumers, feature_stage

SCALE_DTYPES = ("float16", "float32")
INT8_FORMS = ("dynamic", "weight_only")
# The dynamic form's settings: the int8 bundles' defaults (per-channel, symmetric, 7-bit codes: reduce_range)
EIGHT_DYNAMIC = Int8Config(activations="dynamic")
WEIGHT_ONLY_FIX = 'use int8_form = "weight_only" (or leave it out) for a TensorRT target'


@dataclass(frozen=True)
class Int4Config(QuantConfig):
    precision: ClassVar[str] = "int4"
    # 2: the form follows the target's weight dialect (1 had `format`, always "qdq"); scale_dtype. 3: int8_form
    version: ClassVar[int] = 3
    # Weights per scale; None: the family's choice (`ExportSpec.int4_block_size`: 16 by default, where
    # 32 lost 3.3 points of the tiny Atlas's char accuracy and 16 lost 1.2, limit 2), resolved by `for_spec`.
    block_size: int | None = None
    symmetric: bool = True  # zero point 0, as TensorRT requires
    scale_dtype: str = "float16"  # how scales are stored; the graph casts them to its float type
    # "ort" dialect: MatMulNBits' accuracy_level. 0: float32 arithmetic; 4: int8 activations (AVX512-VNNI
    # here: MiniLM at 24 sentences 780 -> 414 ms, embeddings moved by <= 2.2e-3; tiny Atlas 3x slower).
    # None: 0 on "qdq" targets (`for_target`), else the family's choice (`ExportSpec.int4_accuracy_level`, `for_spec`).
    accuracy_level: int | None = None
    # Graph outputs whose upstream float weights stay 8-bit (see the module doc); None: the family's
    # choice (`ExportSpec.int8_upstream_of`, resolved by `for_spec` so the manifest records it); (): none.
    int8_upstream_of: tuple[str, ...] | None = None
    # The form of those 8-bit weights: "dynamic" (int8 weights on the integer kernel, activations quantized per call;
    # "ort" only) or "weight_only" (MatMulNBits bits 8 on "ort", int8 DequantizeLinear on "qdq"). None: "dynamic" on a
    # target whose int8 activations are dynamic (`for_target`), else "weight_only". Version 2 records were weight_only.
    # Recorded as resolved for the target even where int8_upstream_of is empty (no weight is 8-bit: it then changes nothing).
    int8_form: str | None = None
    # TriX's ternary tiles: MatMulNBits' accuracy_level on their 2-bit products, as Int8Config's (0 or 4; a record
    # written before this field existed reads 0).
    tile_accuracy_level: int = 0

    @property
    def tile_level(self) -> int:
        return self.tile_accuracy_level

    def __post_init__(self) -> None:
        checked_tile_level("int4", self.tile_accuracy_level)
        names = self.int8_upstream_of
        if names is not None:
            if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
                raise GfedgeError(f"int4 int8_upstream_of {names!r} is not a list of output names", 'use e.g. ["routes"], or [] for all-4-bit weights')
            object.__setattr__(self, "int8_upstream_of", tuple(names))  # a TOML or JSON list arrives as a list
        if self.block_size is not None and (self.block_size < 16 or self.block_size & (self.block_size - 1)):
            raise GfedgeError(f"int4 block_size {self.block_size} is not a power of two >= 16", "use 16, 32, 64 or 128")
        if self.accuracy_level is not None and self.accuracy_level not in (0, 1, 2, 3, 4):
            raise GfedgeError(f"int4 accuracy_level {self.accuracy_level} is not one of onnxruntime's", "use 0 (float32) or 4 (int8 activations)")
        if self.int8_form is not None and self.int8_form not in INT8_FORMS:
            raise GfedgeError(f"int4 int8_form {self.int8_form!r} is unknown", f"use one of {', '.join(INT8_FORMS)}")
        if self.scale_dtype not in SCALE_DTYPES:
            raise GfedgeError(f"int4 scale_dtype {self.scale_dtype!r} is not supported", f"use one of {', '.join(SCALE_DTYPES)}")

    def for_target(self, profile) -> Int4Config:
        """accuracy_level left None is 0 on a "qdq" target: it is a MatMulNBits setting, and that dialect has none.
        int8_form left None is the target's int8 form: "dynamic" where its int8 activations are, else "weight_only"."""
        config = self
        tile_level_for_target("int4", config.tile_accuracy_level, profile)
        if config.int8_form == "dynamic" and profile.weight_dialect != "ort":
            raise int8.dynamic_refused("int4 int8_form", f"target {profile.name} (weight_dialect {profile.weight_dialect!r})", WEIGHT_ONLY_FIX)
        if config.int8_form is None:
            dynamic = profile.weight_dialect == "ort" and profile.int8_activations == "dynamic"
            config = dataclasses.replace(config, int8_form="dynamic" if dynamic else "weight_only")
        if config.accuracy_level is None and profile.weight_dialect != "ort":
            config = dataclasses.replace(config, accuracy_level=0)
        return config

    def for_spec(self, spec) -> Int4Config:
        """This config with every setting left as None replaced by the family's choice (the spec's)."""
        chosen = {"int8_upstream_of": tuple(spec.int8_upstream_of), "block_size": spec.int4_block_size, "accuracy_level": spec.int4_accuracy_level}
        return dataclasses.replace(self, **{name: value for name, value in chosen.items() if getattr(self, name) is None})


@register(Int4Config)
def to_int4(model: onnx.ModelProto, config: Int4Config, context: QuantContext) -> onnx.ModelProto:
    config = config.for_spec(context.spec)
    dynamic = config.int8_form == "dynamic"
    if dynamic and context.dialect != "ort":
        raise int8.dynamic_refused("int4 int8_form", f"the {context.dialect!r} weight dialect", WEIGHT_ONLY_FIX)
    kept = context.spec.unquantized
    model = lowbit.require_opset(gemm_to_matmul(model, keep=kept), lowbit.INT4_OPSET)
    skip = set(consumers(model, kept)) | set(feature_stage(model, context.spec.fp32_inputs))
    eight = int8_weights(model, config, kept)
    reads = weights.readers(model)
    readers = {node.name for name in eight for node, _ in reads[name]}  # nodes the 4-bit pass leaves alone
    blocks = {"block_size": config.block_size, "symmetric": config.symmetric}
    if context.dialect == "ort":
        tables = weights.find(model, skip)["tables"]
        model = _quantizer(model, config, skip | readers, gathers=[t for t in tables if t not in eight], qdq=False)
        if readers and dynamic:  # the 8-bit matrices in the int8 bundles' dynamic form, on their readers only
            model = int8.dynamic_matmuls(model, readers - skip, EIGHT_DYNAMIC)
        elif readers:  # the same quantizer at 8 bits, on their readers only
            others = {n.name for n in model.graph.node if n.name not in readers}
            model = _quantizer(model, config, skip | others, gathers=[], qdq=False, bits=8)
        found = weights.find(model, skip)  # what the quantizers left in float
        nbits = partial(weights.nbits_per_tower, accuracy_level=config.accuracy_level, **blocks)
        eight_form = partial(weights.int8_per_tower, reduce_range=EIGHT_DYNAMIC.reduce_range) if dynamic else partial(nbits, bits=8)
        model = weights.rewrite(model, [n for n in found["stacked"] if n not in eight], partial(nbits, bits=4))
        model = weights.rewrite(model, [n for n in found["stacked"] if n in eight], eight_form)
    else:
        model = _quantizer(model, config, skip | readers, gathers=[], qdq=True)
        found = weights.find(model, skip)
        model = weights.rewrite(model, [n for n in found["tables"] if n not in eight], partial(weights.int4_dq, **blocks))
        model = weights.rewrite(model, [n for n in found["stacked"] if n not in eight], partial(weights.int4_dq, stacked=True, **blocks))
        model = weights.rewrite(model, [n for n in found["stacked"] if n in eight], _int8_dq)  # "ort": per tower at 8 bits above
    model = weights.rewrite(model, [n for n in found["tables"] if n in eight], weights.int8_table)
    model = weights.rewrite(model, [n for n in found["leftovers"] if n in eight], _int8_dq)
    model = weights.rewrite(model, [n for n in found["leftovers"] if n not in eight], partial(weights.int4_dq, **blocks))
    return weights.store_scales(model, config.scale_dtype)


def int8_weights(model: onnx.ModelProto, config: Int4Config, kept: tuple[str, ...]) -> set[str]:
    """The weights mixed precision keeps at 8 bits: the float initializers of rank >= 2 that the outputs named in
    `config.int8_upstream_of` depend on, less what stays float."""
    names = config.int8_upstream_of or ()
    inits = {i.name: i for i in model.graph.initializer}
    cone = weights.upstream(model, names) - set(kept) if names else set()
    return {n for n in cone if inits[n].data_type in weights.FLOATS and len(inits[n].dims) >= 2}


def _int8_dq(rw: weights.Rewriter, name: str, uses: list) -> None:
    """An 8-bit weight the quantizers left: a MatMul's [K, N] weight per output channel, anything else per row."""
    weights.int8_dq(rw, name, uses, axis=1 if weights.matrix_operand(uses) and len(rw.inits[name].dims) == 2 else 0)


def _quantizer(model: onnx.ModelProto, config: Int4Config, skip: set[str], *, gathers: list[str], qdq: bool, bits: int = 4) -> onnx.ModelProto:
    """onnxruntime's MatMulNBitsQuantizer on the 2-D MatMul weights (and, QOperator only, the named tables' Gathers),
    `bits` 4 or (QOperator only) 8."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization import matmul_nbits_quantizer as mq

    tables = set(gathers)
    other_gathers = [n.name for n in model.graph.node if n.op_type == "Gather" and n.input[0] not in tables]
    algo = mq.DefaultWeightOnlyQuantConfig(
        block_size=config.block_size, is_symmetric=config.symmetric, quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator, bits=bits,
        accuracy_level=None if qdq else config.accuracy_level or None,
        op_types_to_quantize=("MatMul", "Gather") if tables else ("MatMul",), quant_axes=(("MatMul", 0), ("Gather", 1)),
    )
    quantizer = mq.MatMulNBitsQuantizer(model, algo_config=algo, nodes_to_exclude=sorted(skip) + other_gathers)
    quantizer.process()
    # A weight several matmuls share (Atlas iterates one block) is written once per matmul: keep one.
    return dedupe_initializers(dedupe_producers(quantizer.model.model))
