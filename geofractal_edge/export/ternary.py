"""Ternary weights {-1, 0, +1} written into the graph at the fewest bits the target's runtime executes.

The traced graph holds each TriX tile tensor as a float initializer that is either the left operand
of a MatMul (compute-every-tile lowering, and routing signatures) or the data of a Gather
(gather-by-route, hierarchical member signatures); see models/trix/lowering.py. Per dialect:

* ``ort``: every such use becomes onnxruntime's 2-bit form, codes value + 2 with the operators'
  default zero point 2 and scale 1, so the dequantized weight is the ternary value itself and the
  graph's own tile-scale multiply is unchanged: MatMul(W, Y) -> MatMulNBits(Y^T, W) (one node for all tiles when Y is shared, one per
  tile when each tile has its own Y), Gather(W, i) -> GatherBlockQuantized, and a constant tile select
  read transposed by MatMuls, MatMul(X, Gather(W, t)^T) -> MatMulNBits(X, W[t]) (dispatch_by_route). The packed bytes on
  disk are the bytes the kernels read: nothing is unpacked at load. A dispatch_by_route graph then gets one sort
  and one Split per layer instead of six index nodes per tile, its tile scales and activation hoisted out of the
  tiles (`dispatch.split_dispatch`: 6 MiB less per session at 64 tiles x 2 layers, outputs bitwise the same).
* ``qdq``: INT4 blocked DequantizeLinear of the codes with unit scales, in TensorRT's documented
  block sizes (ternary_int4.py); the graph's own tile-scale multiply stays, as for ``ort``.

The spec's ternary codes must all be lowered; its keep-float tensors are packed the same way when
they hold only -1, 0 and +1 (TriX's routing signatures: lossless, scores stay float), unless the
bundle asks for onnxruntime's lookup-table kernel (pack_keep_float=False: it would quantize the scores).

``tile_accuracy_level`` (``ort``): MatMulNBits' accuracy_level on the tiles' products, never on a packed
keep-float tensor's (routing scores stay float arithmetic). 0: float arithmetic, the exact kernel, which
onnxruntime runs for 2 bits by dequantizing the whole tile every call (0.2-0.5 ms per 256 x 256 tile at 1-64
rows), the tiles 2-bit in the session; 4: int8 activations (19-27 us at 1-4 rows on an AVX-512 VNNI Xeon), for which
onnxruntime prepacks each tile to ~2.7x its 2-bit bytes: an int8 or int4 config's `tile_accuracy_level`, not a default.
A model whose tiles are only gathered (gather_by_route: GatherBlockQuantized, no product) refuses a level other than 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from geofractal_edge.errors import Bug, GfedgeError
from geofractal_edge.export import lowbit
from geofractal_edge.export.dispatch import Shapes, split_dispatch
from geofractal_edge.export.passes import attrs, drop_unused_initializers, per_slice, readers
from geofractal_edge.export.ternary_int4 import ternary_to_int4_dq
from geofractal_edge.models.spec import ExportSpec


def lower_ternary(model: onnx.ModelProto, spec: ExportSpec, *, dialect: str, pack_keep_float: bool = True,
                  tile_accuracy_level: int = 0) -> onnx.ModelProto:
    """The graph with the spec's ternary tensors in the dialect's low-bit form.

    pack_keep_float=False leaves the keep-float tensors float: a bundle that may run 2-bit MatMulNBits with
    onnxruntime's lookup-table kernel (int8 activations; export/lut_choice.py decides) must not route through it.

    Every tensor lowered is checked to hold only -1, 0 and +1 here, for both dialects. The full ONNX check
    is the caller's (`pipeline` runs `passes.check_full` once, on the graph the bundle holds).
    """
    if tile_accuracy_level and dialect != "ort":
        raise Bug(f"tile accuracy_level {tile_accuracy_level} asked for the {dialect!r} dialect, which has no MatMulNBits")
    inits = {i.name: i for i in model.graph.initializer}
    required = [c for c, _ in spec.ternary if c in inits]
    missing = [c for c, _ in spec.ternary if c not in inits]
    if missing:
        raise Bug(f"ternary tensor {missing[0]} is not an initializer of the exported graph")
    values = {name: numpy_helper.to_array(inits[name]) for name in required}
    for name, array in values.items():
        if not np.isin(array, (-1, 0, 1)).all():
            raise Bug(f"ternary tensor {name} holds values other than -1, 0, +1")
    optional = {n: numpy_helper.to_array(inits[n]) for n in spec.keep_float if n in inits and pack_keep_float}
    values |= {n: a for n, a in optional.items() if a.ndim >= 2 and np.isin(a, (-1, 0, 1)).all()}
    if dialect == "qdq":
        pairs = tuple((c, s) for c, s in spec.ternary if c in values)
        return ternary_to_int4_dq(model, {c: values[c] for c, _ in pairs}, pairs)
    model = onnx.shape_inference.infer_shapes(model)  # a copy, so the caller's graph is left as it is; the only inference:
    shapes = Shapes.of(model)  # onnx cannot infer through MatMulNBits, and the lowering keeps the names of the values it replaces
    lowered = _lower_ort(model, values, required=set(required), ranks=shapes.ranks, tile_level=tile_accuracy_level)
    return split_dispatch(lowered, shapes=shapes)


def _lower_ort(model: onnx.ModelProto, values: dict[str, np.ndarray], *, required: set[str], ranks: dict[str, int],
               tile_level: int = 0) -> onnx.ModelProto:
    """`model` (shape-inferred, changed in place) with each use of `values` in 2-bit form; `ranks` are its values' ranks;
    the products of the `required` (ternary code) tensors at MatMulNBits accuracy_level `tile_level` where it is not 0."""
    view = _View.of(model, ranks)
    uses = {n: [node if i == 0 else None for node, i in view.reads[n]] for n in values if n in view.reads}  # None: not the first input
    patterns = {n: [_pattern(node, n, view) for node in nodes] for n, nodes in uses.items()}
    lowerable = {n for n, found in patterns.items() if found and all(found)}
    bad = sorted(required - lowerable)
    if bad:
        raise Bug(f"ternary tensor {bad[0]} is read in a way the 2-bit lowering does not know: {[n.op_type for n in uses.get(bad[0], [])]}")
    if tile_level and all(p == "gather" for n in required for p in patterns[n]):
        raise GfedgeError(f"tile_accuracy_level {tile_level} is set, but this graph multiplies no ternary tile (its tiles are gathered: "
                          "gather_by_route)", "drop tile_accuracy_level from the quantization config for this model")
    lowered = {node.output[0]: (n, p) for n in lowerable for node, p in zip(uses[n], patterns[n])}  # each reader: (tensor, pattern)
    graph = model.graph
    dtype = {i.name: i.data_type for i in graph.initializer}
    nodes, inits, packed = [], [], set()
    instead: dict[str, tuple[list, list]] = {}  # by a node's output: the (nodes, initializers) that replace it where it stands
    for node in graph.node:
        out = node.output[0]
        if out not in instead and out in lowered:
            name, pattern = lowered[out]
            pack, read = _LOWER[pattern]
            if (pack, name) not in packed:  # codes and unit scales once per tensor, however many nodes read it
                packed.add((pack, name))
                made, consts = pack(name, values[name], dtype[name])
                nodes += made
                inits += consts
            instead |= read(node, name, values[name].shape, view, tile_level if name in required else 0)
        made, consts = instead.pop(out, ([node], []))
        nodes += made
        inits += consts
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    del graph.value_info[:]  # stale: the float weights are gone, and onnx would not infer past MatMulNBits
    drop_unused_initializers(model)
    lowbit.use_ms_domain(model)
    return model


class _View(NamedTuple):
    """What `_pattern` reads of the graph: value ranks, each value's readers, integer scalar initializers, graph outputs."""

    ranks: dict[str, int]
    reads: dict[str, list[tuple[onnx.NodeProto, int]]]  # passes.readers
    scalars: dict[str, int]
    outputs: frozenset[str]

    @classmethod
    def of(cls, model: onnx.ModelProto, ranks: dict[str, int]) -> _View:
        graph = model.graph
        ranks = ranks | {i.name: len(i.dims) for i in graph.initializer}
        ints = (TensorProto.INT64, TensorProto.INT32)
        scalars = {i.name: int(numpy_helper.to_array(i)) for i in graph.initializer if i.data_type in ints and not i.dims}
        return cls(ranks, readers(model), scalars, frozenset(o.name for o in graph.output))

    def readers(self, value: str) -> list[onnx.NodeProto]:
        return [node for node, _ in self.reads.get(value, [])]


def _pattern(node: onnx.NodeProto | None, name: str, view: _View) -> str | None:
    """Which lowering applies to this use of ternary tensor `name`, or None."""
    if node is None:  # the tensor is some node's second (or later) input
        return None
    if node.op_type == "Gather" and attrs(node).get("axis", 0) == 0:
        return "select_matmul" if _selects_a_tile_for_matmuls(node, view) else "gather"
    if node.op_type == "MatMul":
        rank = view.ranks.get(node.input[1])
        if rank == 2:
            return "matmul_shared"
        if rank == 3:
            return "matmul_per_tile"
    return None


def _selects_a_tile_for_matmuls(node: onnx.NodeProto, view: _View) -> bool:
    """Gather(W [n, a, b], constant scalar t) -> Transpose -> right operand of MatMuls with X [M, b] (dispatch_by_route)."""
    def only(value: str, test) -> bool:
        readers = view.readers(value)
        return bool(readers) and value not in view.outputs and all(test(r, value) for r in readers)

    def transposed(r: onnx.NodeProto, value: str) -> bool:
        return r.op_type == "Transpose" and list(attrs(r).get("perm", [1, 0])) == [1, 0] and only(r.output[0], right_operand)

    def right_operand(r: onnx.NodeProto, value: str) -> bool:
        return r.op_type == "MatMul" and r.input[1] == value and r.input[0] != value and view.ranks.get(r.input[0]) == 2

    return node.input[1] in view.scalars and view.ranks.get(node.input[0]) == 3 and only(node.output[0], transposed)


def _unit_scales(name: str, rows: tuple[int, ...], blocks: int, dtype: int) -> tuple[onnx.NodeProto, onnx.TensorProto]:
    """Scale 1 for every block of every row, in the graph's float type: the codes dequantize to -1, 0, +1.

    Made by ConstantOfShape (onnxruntime folds it at load), so the bundle stores no ones.
    """
    shape = lowbit.constant(f"{name}.shape", np.array([*rows, blocks], np.int64))
    one = numpy_helper.from_array(np.ones(1, helper.tensor_dtype_to_np_dtype(dtype)))
    return helper.make_node("ConstantOfShape", [shape.name], [name], name=name, value=one), shape


# `_LOWER` maps each pattern to a pair: `pack(name, w, dtype) -> (nodes, initializers)` makes the tensor's codes
# and unit scales (once per tensor); `read(node, name, shape, view) -> {output of each node replaced: (nodes,
# initializers)}` what replaces the reader (and, for a tile select, the nodes after it). `level` is the MatMulNBits
# accuracy_level of the products a read makes (a tile's: the config's tile_accuracy_level; a packed keep-float
# tensor's: 0); a gather makes none. `_in_place` turns a one-reader function `f(node, name, shape, level) -> (nodes,
# initializers)` into such a read.


def _pack_shared(name: str, w: np.ndarray, dtype: int):
    """W [.., a, b] as one MatMulNBits weight: N = n * a rows of K = b."""
    lead, a, b = w.shape[:-2], w.shape[-2], w.shape[-1]
    rows = int(np.prod(w.shape[:-1]))
    packed = lowbit.ternary_blocks(w.reshape(rows, b), lowbit.block_size_for(b))  # [N, k_blocks, block / 4]
    scales, shape = _unit_scales(f"{name}.q2_scales", (rows,), packed.shape[1], dtype)
    inits = [lowbit.constant(f"{name}.q2", packed), shape]
    if lead:
        inits.append(lowbit.constant(f"{name}.q2_shape", np.array([-1, *lead, a], np.int64)))
    return [scales], inits


def _matmul_shared(node, name: str, shape: tuple[int, ...], level: int):
    """MatMul(W [.., a, b], Y [b, M]) -> [.., a, M]: one MatMulNBits over every row of W (N = n * a)."""
    lead, b = shape[:-2], shape[-1]
    rows = int(np.prod(shape[:-1]))
    out = node.output[0]
    base = f"{node.name or out}.q2"
    nodes = [
        helper.make_node("Transpose", [node.input[1]], [f"{base}.a"], name=f"{base}.a", perm=[1, 0]),  # [M, b]
        lowbit.matmul_nbits(f"{base}.a", f"{base}.y", name=base, packed=f"{name}.q2", scales=f"{name}.q2_scales", k=b, n=rows, bits=2,
                            block_size=lowbit.block_size_for(b), accuracy_level=level),  # [M, N]
    ]
    if lead:
        nodes.append(helper.make_node("Reshape", [f"{base}.y", f"{name}.q2_shape"], [f"{base}.r"], name=f"{base}.r"))  # [M, n, a]
        nodes.append(helper.make_node("Transpose", [f"{base}.r"], [out], name=f"{base}.t", perm=[*range(1, len(lead) + 2), 0]))
    else:
        nodes.append(helper.make_node("Transpose", [f"{base}.y"], [out], name=f"{base}.t", perm=[1, 0]))
    return nodes, []


def _pack_tiles(name: str, w: np.ndarray, dtype: int):
    """W [n, a, b] as n MatMulNBits weights [a, b], one per tile, sharing one unit-scale tensor."""
    b = w.shape[-1]
    packed = lowbit.ternary_blocks(w, lowbit.block_size_for(b))  # [n, a, k_blocks, block / 4]
    scales, shape = _unit_scales(f"{name}.q2t_scales", (w.shape[1],), packed.shape[2], dtype)
    return [scales], [shape, *(lowbit.constant(f"{name}.q2t.{t}", tile) for t, tile in enumerate(packed))]


def _matmul_per_tile(node, name: str, shape: tuple[int, ...], level: int):
    """MatMul(W [n, a, b], Y [n, b, M]) -> [n, a, M]: tile t's product is MatMulNBits(Y[t]^T, W[t]).

    The per-slice frame is passes.per_slice, as for int4/int8 per-tower weights; here the sliced
    operand is Y (the second input), since the weight is MatMul's left operand.
    """
    n, a, b = shape

    def tile(t: int, y: str, out: str, part: str) -> list[onnx.NodeProto]:  # Y[t] [1, b, M] -> [1, a, M]
        return [
            helper.make_node("Transpose", [y], [f"{part}.a"], name=f"{part}.a", perm=[0, 2, 1]),  # [1, M, b]
            _tile_nbits(name, t, f"{part}.a", f"{part}.mm", part, a, b, level),  # [1, M, a]
            helper.make_node("Transpose", [f"{part}.mm"], [out], name=f"{part}.t", perm=[0, 2, 1]),  # [1, a, M]
        ]

    return per_slice(node, 1, n, "q2", tile)  # Y[t] keeps its leading 1 through the tile


def _select_matmul(node, name: str, shape: tuple[int, ...], view: _View, level: int) -> dict[str, tuple[list, list]]:
    """Gather(W [n, a, b], t) -> Transpose -> MatMul(X, .): the Gather and Transposes go, each MatMul becomes MatMulNBits(X, W[t])."""
    n, t = shape[0], view.scalars[node.input[1]]
    if not -n <= t < n:
        raise Bug(f"tile select {node.name or node.output[0]} reads tile {t} of {name}, which has {n}")
    instead = {node.output[0]: ([], [])}
    for transpose in view.readers(node.output[0]):
        instead[transpose.output[0]] = ([], [])
        instead |= {mm.output[0]: ([_rows_matmul(name, t % n, mm, shape, level)], []) for mm in view.readers(transpose.output[0])}
    return instead


def _rows_matmul(name: str, t: int, matmul: onnx.NodeProto, shape: tuple[int, ...], level: int) -> onnx.NodeProto:
    """MatMul(X [M, b], W[t]^T) -> MatMulNBits(X, W[t]) [M, a], W [n, a, b] packed per tile by `_pack_tiles`."""
    _, a, b = shape
    return _tile_nbits(name, t, matmul.input[0], matmul.output[0], f"{matmul.name or matmul.output[0]}.q2", a, b, level)


def _tile_nbits(name: str, t: int, x: str, out: str, node_name: str, a: int, b: int, level: int) -> onnx.NodeProto:
    """MatMulNBits(X [M, b], tile t of `name`) -> [M, a]: the 2-bit codes and scales `_pack_tiles` wrote."""
    return lowbit.matmul_nbits(x, out, name=node_name, packed=f"{name}.q2t.{t}", scales=f"{name}.q2t_scales", k=b, n=a, bits=2,
                               block_size=lowbit.block_size_for(b), accuracy_level=level)


def _pack_gather(name: str, w: np.ndarray, dtype: int):
    """W [n, ..., b] as GatherBlockQuantized data, quantized along the last axis."""
    packed = lowbit.ternary_blocks(w, lowbit.block_size_for(w.shape[-1]))  # [n, ..., k_blocks, block / 4]
    scales, shape = _unit_scales(f"{name}.q2g_scales", w.shape[:-1], packed.shape[-2], dtype)
    return [scales], [lowbit.constant(f"{name}.q2g", packed.reshape(*w.shape[:-1], -1)), shape]  # [n, ..., k_blocks * block / 4]


def _gather(node, name: str, shape: tuple[int, ...], level: int):
    """Gather(W [n, ..., b], i) -> GatherBlockQuantized of the same codes (no product: `level` has nothing to set)."""
    b = shape[-1]
    block = lowbit.block_size_for(b)
    out, base = node.output[0], f"{node.name or node.output[0]}.q2"
    padded = b % block != 0
    nodes = [lowbit.gather_block_quantized(f"{name}.q2g", node.input[1], f"{base}.full" if padded else out, name=base, scales=f"{name}.q2g_scales",
                                           zero_points=None, bits=2, block_size=block, quantize_axis=len(shape) - 1)]
    inits = []
    if padded:  # codes were padded to whole blocks: keep the first b of the last axis
        inits += [lowbit.constant(f"{base}.start", np.array([0], np.int64)), lowbit.constant(f"{base}.end", np.array([b], np.int64)),
                  lowbit.constant(f"{base}.axes", np.array([-1], np.int64))]
        nodes.append(helper.make_node("Slice", [f"{base}.full", f"{base}.start", f"{base}.end", f"{base}.axes"], [out], name=f"{base}.slice"))
    return nodes, inits


def _in_place(read):
    """A `read` that replaces only the reader itself, as a `_LOWER` read: {reader's output: (nodes, initializers)}."""
    return lambda node, name, shape, view, level: {node.output[0]: read(node, name, shape, level)}


_LOWER = {"matmul_shared": (_pack_shared, _in_place(_matmul_shared)), "matmul_per_tile": (_pack_tiles, _in_place(_matmul_per_tile)),
          "gather": (_pack_gather, _in_place(_gather)), "select_matmul": (_pack_tiles, _select_matmul)}
