"""The weights onnxruntime's quantizers leave in float, found by how the graph reads them, and their low-bit forms.

`quantize_static` and `MatMulNBitsQuantizer` quantize 2-D MatMul/Gemm weights. What they leave:

* tables: rank-2 float initializers read only as a Gather's data (embeddings, position tables);
* stacked: rank-3 [T, K, N] weights read only as a batched MatMul's right operand (a collective's
  routers, one slice per tower);
* leftovers: any other float initializer of rank >= 2 that only weight-reading ops read (conv filters).

Tensors the graph adds or multiplies elementwise (biases, norm gains, a position table added to the
embeddings) stay float: a few bytes, and int4 noise there moves every activation. Nodes in `skip` (readers of the spec's unquantized tensors) and the fp32 feature stage keep theirs.
The rewrites use onnxruntime's own block quantizer (`DefaultWeightOnlyQuantizer`) for every int4 code.
`upstream` finds the weights an output depends on (int4's mixed precision keeps those at 8 bits).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from geofractal_edge.errors import GfedgeError
from geofractal_edge.export import lowbit
from geofractal_edge.export.passes import attrs, drop_unused_initializers, per_slice, readers

FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16)
_QUANTIZED_READERS = {"DequantizeLinear", "QuantizeLinear", "MatMulNBits", "GatherBlockQuantized"}
MIN_ELEMENTS = 128  # smaller tensors would carry as many scale bytes as they save
_WEIGHT_READERS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum", "Gather"}


def find(model: onnx.ModelProto, skip: set[str]) -> dict[str, list[str]]:
    """Float weights by kind: {"tables": [...], "stacked": [...], "leftovers": [...]}, each in graph order."""
    reads = readers(model)
    found: dict[str, list[str]] = {"tables": [], "stacked": [], "leftovers": []}
    for init in model.graph.initializer:
        uses = reads.get(init.name, [])
        if init.data_type not in FLOATS or len(init.dims) < 2 or int(np.prod(init.dims)) < MIN_ELEMENTS or not uses:
            continue
        if any(node.name in skip or node.op_type in _QUANTIZED_READERS for node, _ in uses):
            continue
        if len(init.dims) == 2 and all(n.op_type == "Gather" and i == 0 and attrs(n).get("axis", 0) == 0 for n, i in uses):
            found["tables"].append(init.name)
        elif len(init.dims) == 3 and init.dims[0] > 1 and all(n.op_type == "MatMul" and i == 1 for n, i in uses):
            found["stacked"].append(init.name)
        elif all(n.op_type in _WEIGHT_READERS for n, _ in uses):
            found["leftovers"].append(init.name)
    return found


def upstream(model: onnx.ModelProto, outputs: tuple[str, ...]) -> set[str]:
    """Names of the initializers that the named graph outputs depend on (their input cone), e.g. every
    weight before a routed model's last router. Unknown output names are refused."""
    known = [o.name for o in model.graph.output]
    unknown = [name for name in outputs if name not in known]
    if unknown:
        raise GfedgeError(f"int8_upstream_of names {', '.join(map(repr, unknown))}, not an output of the graph", f"use outputs among: {', '.join(known)}")
    produced = {out: node for node in model.graph.node for out in node.output}
    inits = {i.name for i in model.graph.initializer}
    seen, stack = set(), list(outputs)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = produced.get(name)
        stack.extend(i for i in (node.input if node is not None else ()) if i)
    return seen & inits


def matrix_operand(uses: list) -> bool:
    """Whether a weight is read only as a MatMul's right operand (then its output channels are its last axis)."""
    return bool(uses) and all(node.op_type == "MatMul" and i == 1 for node, i in uses)


class Rewriter:
    """Collects new initializers and the nodes that replace (or precede) existing ones, then applies them."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.inits = {i.name: i for i in model.graph.initializer}
        self.before: dict[int, list[onnx.NodeProto]] = {}  # id(node) -> nodes to put before it
        self.replace: dict[int, list[onnx.NodeProto]] = {}  # id(node) -> nodes instead of it
        self.new_inits: list[TensorProto] = []

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.inits[name])

    def add(self, *tensors: TensorProto) -> None:
        self.new_inits.extend(tensors)

    def apply(self) -> onnx.ModelProto:
        graph = self.model.graph
        nodes = []
        for node in graph.node:
            nodes.extend(self.before.get(id(node), []))
            nodes.extend(self.replace.get(id(node), [node]))
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend(self.new_inits)
        drop_unused_initializers(self.model)
        return self.model


def rewrite(model: onnx.ModelProto, names: list[str], each: Callable[[Rewriter, str, list], None]) -> onnx.ModelProto:
    """Call `each(rewriter, name, uses)` for every named weight, then apply what it collected."""
    if not names:
        return model
    rw = Rewriter(model)
    reads = readers(model)
    for name in names:
        each(rw, name, reads[name])
    return rw.apply()


def int4_blocks(w: np.ndarray, *, axis: int, block_size: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """onnxruntime's blocked int4 quantization along `axis`: (two-per-byte packed codes, scales with that axis in
    blocks, packed zero points or None when symmetric). Symmetric codes are INT4, asymmetric UINT4."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantizer

    packed, scales, zero_points = DefaultWeightOnlyQuantizer.quantize_ndarray(w.astype(np.float32), axis, block_size, symmetric)
    return packed, scales.astype(w.dtype), zero_points


def nbits_matrix(w: np.ndarray, *, block_size: int, symmetric: bool, bits: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """W [K, N] -> MatMulNBits' (packed [N, k_blocks, block_size * bits / 8], scales [N, k_blocks], zero points or
    None), onnxruntime's packing."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, DefaultWeightOnlyQuantizer

    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=symmetric, quant_format=QuantFormat.QOperator, bits=bits)
    packed, scales, zero_points = DefaultWeightOnlyQuantizer(config).qbits_block_quant(w.astype(np.float32))
    return packed, scales.astype(w.dtype), None if symmetric else zero_points


# ---- int4, qdq dialect: blocked DequantizeLinear feeding the original reader ----------------------


def int4_dq(rw: Rewriter, name: str, uses: list, *, block_size: int, symmetric: bool, stacked: bool = False) -> None:
    """W [d0, ...] -> Reshape(DQ(INT4 [d0, rest] blocked along rest)) in place of W (tables, leftovers); a
    `stacked` [T, K, N] weight is blocked along K, per tower, as it is (a matmul's input axis)."""
    w = rw.array(name)
    axis = 1
    flat = w if stacked else w.reshape(w.shape[0], -1)  # [T, K, N] or [d0, rest]
    packed, scales, zero_points = int4_blocks(flat, axis=axis, block_size=block_size, symmetric=symmetric)
    kind = TensorProto.INT4 if symmetric else TensorProto.UINT4
    rw.add(lowbit.int4_tensor(f"{name}.int4", packed, flat.shape, kind=kind), lowbit.constant(f"{name}.int4_scales", scales))
    inputs = [f"{name}.int4", f"{name}.int4_scales"]
    if zero_points is not None:
        rw.add(lowbit.int4_tensor(f"{name}.int4_zero_points", zero_points, scales.shape, kind=kind))
        inputs.append(f"{name}.int4_zero_points")
    dq_out = f"{name}.dq" if flat.shape != w.shape else name + ".w"
    made = [helper.make_node("DequantizeLinear", inputs, [dq_out], name=f"{name}.dequantize", axis=axis, block_size=block_size)]
    if flat.shape != w.shape:
        rw.add(lowbit.constant(f"{name}.shape", np.array(w.shape, np.int64)))
        made.append(helper.make_node("Reshape", [dq_out, f"{name}.shape"], [name + ".w"], name=f"{name}.reshape"))
    _feed(rw, uses, name, name + ".w", made)


def _feed(rw: Rewriter, uses: list, old: str, new: str, made: list[onnx.NodeProto]) -> None:
    """Put `made` before the first reader and point every reader at `new` instead of `old`."""
    first = uses[0][0]
    rw.before.setdefault(id(first), []).extend(made)
    for node, i in uses:
        node.input[i] = new


# ---- int4, ort dialect: packed operators -----------------------------------------------------------


def nbits_per_tower(rw: Rewriter, name: str, uses: list, *, block_size: int, symmetric: bool, accuracy_level: int = 0, bits: int = 4) -> None:
    """MatMul(X [T, .., K], W [T, K, N]) -> Concat over t of MatMulNBits(X[t], W[t]): each tower's weight stays `bits`-bit.

    MatMulNBits takes one 2-D weight, so the towers are separate nodes (the graph grows with T here).
    """
    w = rw.array(name)
    towers, k, n = w.shape
    for t in range(towers):
        packed, scales, zero_points = nbits_matrix(w[t], block_size=block_size, symmetric=symmetric, bits=bits)  # [N, k_blocks, block * bits / 8], [N, k_blocks]
        rw.add(lowbit.constant(f"{name}.q{bits}.{t}", packed), lowbit.constant(f"{name}.q{bits}.{t}_scales", scales))
        if zero_points is not None:
            rw.add(lowbit.constant(f"{name}.q{bits}.{t}_zero_points", zero_points))

    def tower(t: int, x: str, y: str, node_name: str) -> list[onnx.NodeProto]:
        return [lowbit.matmul_nbits(x, y, name=node_name, packed=f"{name}.q{bits}.{t}", scales=f"{name}.q{bits}.{t}_scales", k=k, n=n,
                                    bits=bits, block_size=block_size, zero_points=None if symmetric else f"{name}.q{bits}.{t}_zero_points",
                                    accuracy_level=accuracy_level)]

    _per_tower(rw, uses, towers, f"q{bits}", tower)


def float_per_tower(rw: Rewriter, name: str, uses: list) -> None:
    """MatMul(X [T, .., K], W [T, K, N]) -> Concat over t of MatMul(X[t], W[t]): the same float weights as 2-D
    initializers, which onnxruntime prepacks once for its GEMM kernel (a 3-D weight it packs on every call)."""
    w = rw.array(name)
    for t in range(w.shape[0]):
        rw.add(lowbit.constant(f"{name}.{t}", w[t]))

    def tower(t: int, x: str, y: str, node_name: str) -> list[onnx.NodeProto]:
        return [helper.make_node("MatMul", [x, f"{name}.{t}"], [y], name=node_name)]

    _per_tower(rw, uses, w.shape[0], "f", tower)


def int8_per_tower(rw: Rewriter, name: str, uses: list, *, reduce_range: bool) -> None:
    """MatMul(X [T, .., K], W [T, K, N]) -> Concat over t of DynamicQuantizeMatMul(X[t], W[t] int8, per-column scales).

    The dynamic int8 form of a collective's stacked weights: each tower's weight stays int8 in the
    session and runs onnxruntime's integer kernel, as the 2-D weights of the same graph do (a
    per-call DequantizeLinear of the stack measured x1.25-1.30 of fp32 at batch 1). `reduce_range`:
    7-bit codes in [-63, 63] (onnxruntime's quantize_dynamic, symmetric with that option, allows -64..64).
    """
    w = rw.array(name)
    towers = w.shape[0]
    for t in range(towers):
        codes, scale = int8_rows(w[t], axis=1, top=63 if reduce_range else 127)  # [K, N], per column [N]
        rw.add(lowbit.constant(f"{name}.i8.{t}", codes), lowbit.constant(f"{name}.i8.{t}_scale", scale),
               lowbit.constant(f"{name}.i8.{t}_zero_point", np.zeros_like(codes[0])))

    def tower(t: int, x: str, y: str, node_name: str) -> list[onnx.NodeProto]:
        return [helper.make_node("DynamicQuantizeMatMul", [x, f"{name}.i8.{t}", f"{name}.i8.{t}_scale", f"{name}.i8.{t}_zero_point"], [y],
                                 name=node_name, domain=lowbit.MS_DOMAIN)]

    _per_tower(rw, uses, towers, "i8", tower)


def _per_tower(rw: Rewriter, uses: list, towers: int, tag: str, tower: Callable[[int, str, str, str], list[onnx.NodeProto]]) -> None:
    """Each reader MatMul(X [T, .., K], W) becomes Concat over t of tower(t, X[t] [1, .., K]) (passes.per_slice:
    MatMul, MatMulNBits and DynamicQuantizeMatMul broadcast over the leading 1)."""
    for node, _ in uses:
        made, inits = per_slice(node, 0, towers, tag, tower)
        rw.replace[id(node)] = made
        rw.add(*inits)


# ---- int8, both dialects: standard operators ---------------------------------------------------------


def int8_rows(w: np.ndarray, *, axis: int = 0, top: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per slice of `axis` (default: per row of [rows, ...]): (codes in [-top, top], scales [w.shape[axis]])."""
    moved = np.moveaxis(w, axis, 0)
    flat = moved.reshape(moved.shape[0], -1).astype(np.float32)
    scale = np.abs(flat).max(axis=1) / float(top)
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    codes = np.clip(np.round(flat / scale[:, None]), -top, top).astype(np.int8).reshape(moved.shape)
    return np.ascontiguousarray(np.moveaxis(codes, 0, axis)), scale


def int8_table(rw: Rewriter, name: str, uses: list) -> None:
    """Gather(T [V, D], i) -> Cast(Gather(Q [V, D] int8, i)) * Gather(scale [V, 1], i): rows stay int8 until read."""
    w = rw.array(name)
    codes, scale = int8_rows(w)
    rw.add(lowbit.constant(f"{name}.int8", codes), lowbit.constant(f"{name}.int8_scale", scale.astype(w.dtype)[:, None]))
    to = helper.np_dtype_to_tensor_dtype(w.dtype)
    for node, _ in uses:
        base, out = node.name or node.output[0], node.output[0]
        rw.replace[id(node)] = [
            helper.make_node("Gather", [f"{name}.int8", node.input[1]], [f"{base}.q"], name=f"{base}.q", axis=0),
            helper.make_node("Gather", [f"{name}.int8_scale", node.input[1]], [f"{base}.s"], name=f"{base}.s", axis=0),
            helper.make_node("Cast", [f"{base}.q"], [f"{base}.f"], name=f"{base}.f", to=to),
            helper.make_node("Mul", [f"{base}.f", f"{base}.s"], [out], name=f"{base}.scale"),
        ]


def int8_dq(rw: Rewriter, name: str, uses: list, *, axis: int = 0) -> None:
    """W -> DequantizeLinear(int8 W, scale per slice of `axis`) in place of W: leftovers at int8 (axis 0), or a
    MatMul's [K, N] weight per output channel (axis 1, the form `quantize_static` writes)."""
    w = rw.array(name)
    codes, scale = int8_rows(w, axis=axis)
    rw.add(lowbit.constant(f"{name}.int8", codes), lowbit.constant(f"{name}.int8_scale", scale.astype(w.dtype)))
    _feed(rw, uses, name, name + ".w", [helper.make_node("DequantizeLinear", [f"{name}.int8", f"{name}.int8_scale"], [name + ".w"],
                                                         name=f"{name}.dequantize", axis=axis)])


# ---- scales stored in float16 --------------------------------------------------------------------------


def store_scales(model: onnx.ModelProto, dtype: str) -> onnx.ModelProto:
    """Store the int4 operators' float32 scales as `dtype` (float16 halves their bytes) and cast them back in the graph.

    MatMulNBits and GatherBlockQuantized take scales in the activations' type, so the float16 scales
    go through a Cast (onnxruntime folds it when the session loads); a DequantizeLinear takes them
    as they are and its float16 output is cast to float32. A tensor whose scales float16 cannot hold
    (outside its normal range) keeps float32.
    """
    if dtype == "float32":
        return model
    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        index = 1 if node.op_type == "DequantizeLinear" else 2 if node.op_type in ("MatMulNBits", "GatherBlockQuantized") else None
        scale = inits.get(node.input[index]) if index is not None and len(node.input) > index else None
        if scale is None or scale.data_type != TensorProto.FLOAT or (node.op_type == "DequantizeLinear" and inits[node.input[0]].data_type not in (TensorProto.INT4, TensorProto.UINT4)):
            nodes.append(node)
            continue
        array = numpy_helper.to_array(scale)
        tiny = np.abs(array)[array != 0]
        if tiny.size and (tiny.min() < np.finfo(np.float16).tiny or tiny.max() > np.finfo(np.float16).max):
            nodes.append(node)
            continue
        half = f"{scale.name}.f16"
        if half not in inits:
            inits[half] = numpy_helper.from_array(array.astype(np.float16), half)
            model.graph.initializer.append(inits[half])
        if node.op_type == "DequantizeLinear":
            out = node.output[0]
            node.input[1], node.output[0] = half, f"{out}.f16"
            nodes += [node, helper.make_node("Cast", [f"{out}.f16"], [out], name=f"{node.name or out}.cast", to=TensorProto.FLOAT)]
        else:
            cast = f"{scale.name}.f32"
            if not any(n.output[:1] == [cast] for n in nodes):
                nodes.append(helper.make_node("Cast", [half], [cast], name=f"{scale.name}.cast", to=TensorProto.FLOAT))
            node.input[2] = cast
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    drop_unused_initializers(model)
    return model
