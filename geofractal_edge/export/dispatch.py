"""dispatch_by_route graphs with a fixed number of index nodes per layer instead of six per tile (onnx only, no torch).

torch's exporter writes `DispatchByRouteFFN` (models/trix/lowering.py) as, per tile t,
``idx_t = Squeeze(Transpose(NonZero(Equal(route, t))))``, ``x_t = Gather(x, Reshape(idx_t, [-1]))``, the tile's
body (matmul, scale, activation, matmul, scale), then ``ScatterND(zeros, Unsqueeze(Concat(idx_t)), Concat(y_t))``.
Every onnxruntime node costs a session memory whatever its tensors' size (~3 KiB an Add, ~7.5 KiB a MatMulNBits;
benchmarks/dispatch_nodes.py --micro BUNDLE), so at 64 tiles x 2 layers (1,581 nodes) the session held 7-8 MiB beyond its 6.3 MiB
of 2-bit weights; rewritten (467 nodes) it held 6 MiB less, and batch-1 calls took x0.73-0.91 the time (benchmarks/RESULTS.md).
`split_dispatch` rewrites each layer so that only the tiles' matmuls stay per tile:

    key    = route * N + arange(N)                         # distinct, so any sort of it is stable
    perm   = TopK(key, N, largest=0).indices                # tokens by tile, in token order within a tile
    counts = ScatterElements(zeros[T], route, 1, reduction=add)   # tokens per tile (0 allowed)
    x_0 .. x_T-1 = Split(Gather(x, perm), counts)          # tile t's rows, in the order NonZero gave them

`perm` equals the old Concat of the indices, so the scatter is unchanged. Where the tile bodies are
chains of per-tile nodes (the matmuls) and elementwise nodes with a per-tile scalar constant or none (the
scales, the activation), the elementwise runs are hoisted out of the tiles: one Concat, the op once with
the constants gathered per row ([N, 1], by route in tile order), one Split back to the tiles (none at the end).
Every tile's node reads the same rows in the same order as before and every elementwise op makes the same
float operation per element, so the outputs are bitwise the same (tests/unit/export/test_dispatch.py).

A route outside [0, T) is dropped by the old graph (its row stays zero). Here one >= T fails the run at the counts
(ScatterElements), and a negative one is not refused: the sort puts its row before tile 0's while the counts charge it
to tile T + route, so the Split hands every tile shifted rows and other tokens' outputs change too (tests/unit/export/
test_dispatch_fallbacks.py). The lowerings only make routes in range (argmax over T tiles, or a cluster's member ids),
and export parity compares routes. "Bitwise the same" was measured with onnxruntime 1.32's CPU kernels on
this project's hosts (AVX2); export parity checks every bundle on the export host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from geofractal_edge.export import lowbit
from geofractal_edge.export.passes import attrs, drop_unused_initializers, readers, toposort

MIN_OPSET = 18  # ScatterElements' reduction="add" (16), Split's `split` input (13); 18: the lowest the exporter writes, the only one tested
UNARY = frozenset({"Gelu", "Relu", "Tanh", "Sigmoid", "Erf", "Neg", "Abs", "Exp", "LeakyRelu", "Elu", "Softplus", "HardSigmoid",
                   "HardSwish", "Identity", "Cast"})
BINARY = frozenset({"Mul", "Add", "Sub", "Div"})  # hoisted where the other operand is a scalar initializer


@dataclass
class _Layer:
    """One dispatch found in the graph."""

    route: str  # int64 [N]
    x: str  # [N, d]: the rows every tile gathers from
    rows: list[str]  # per tile (Concat order = tile t): its gathered rows, kept as that tile's Split output
    order: str  # the Concat of the tiles' indices (the ScatterND reads it): becomes perm
    dead: list[onnx.NodeProto]  # the index chains, the row gathers and the index Concat
    outs: onnx.NodeProto | None  # Concat(y_t) the ScatterND reads, where its inputs are in tile order


class Shapes(NamedTuple):
    """(rank, element type) by value name, as onnx's shape inference knows them."""

    ranks: dict[str, int]
    types: dict[str, int]

    @classmethod
    def of(cls, inferred: onnx.ModelProto) -> Shapes:
        """Read from a graph shape inference has run on: its value_info, inputs and outputs."""
        graph = inferred.graph
        values = (*graph.value_info, *graph.input, *graph.output)
        ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.tensor_type.HasField("shape")}
        return cls(ranks, {v.name: v.type.tensor_type.elem_type for v in values})


def split_dispatch(model: onnx.ModelProto, *, shapes: Shapes | None = None) -> onnx.ModelProto:
    """The graph with each per-tile NonZero dispatch replaced by one sort and one Split, and the tiles' elementwise
    nodes hoisted where they can be; `model` itself where it has no dispatch.

    shapes: the values' ranks and types, for a graph onnx cannot infer through (the 2-bit lowering's MatMulNBits:
    `ternary.lower_ternary` passes those of the float graph, whose value names the lowering keeps); inferred here if None.
    """
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if version < MIN_OPSET:
        return model  # the exporter writes opset >= 18; an older graph keeps its dispatch
    reads, outputs = readers(model), {o.name for o in model.graph.output}  # the nodes change only after every layer is planned
    layers = _find(model, reads, outputs)
    if not layers:
        return model
    ranks, types = shapes or Shapes.of(onnx.shape_inference.infer_shapes(model))
    layers = [layer for layer in layers if types.get(layer.route) == TensorProto.INT64]  # the key and counts are int64
    if not layers:
        return model
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    dead, new = {node.output[0] for layer in layers for node in layer.dead}, []  # nodes by their first output: protobuf wrappers are not stable ids
    for i, layer in enumerate(layers):
        base = f"dispatch_split.{i}"
        nodes, consts = _sort_and_split(layer, base)
        hoisted, more, gone = _hoist(layer, base, reads, inits, ranks, outputs)
        new += nodes + hoisted
        graph.initializer.extend(consts + more)
        dead |= gone
    kept = [node for node in graph.node if node.output[0] not in dead] + new
    del graph.node[:]
    graph.node.extend(kept)
    made = {out for node in kept for out in node.output}
    infos = [v for v in graph.value_info if v.name in made]  # the removed values' shapes go with them
    del graph.value_info[:]
    graph.value_info.extend(infos)
    drop_unused_initializers(model)  # the tiles' index and scale scalars
    return toposort(model)


def _sort_and_split(layer: _Layer, base: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    tiles = len(layer.rows)
    consts = [lowbit.constant(f"{base}.zero", np.array(0, np.int64)), lowbit.constant(f"{base}.one", np.array(1, np.int64)),
              lowbit.constant(f"{base}.ones", np.array([1], np.int64)), lowbit.constant(f"{base}.empty", np.zeros(tiles, np.int64))]
    n, key = f"{base}.n", f"{base}.key"
    nodes = [
        _node("Shape", [layer.route], n),  # [1]: N
        _node("Squeeze", [n], f"{n}.scalar"),
        _node("Range", [f"{base}.zero", f"{n}.scalar", f"{base}.one"], f"{base}.arange"),  # [N]
        _node("Mul", [layer.route, n], f"{key}.tile"),
        _node("Add", [f"{key}.tile", f"{base}.arange"], key),  # [N]: route * N + i, all distinct
        _node("TopK", [key, n], [f"{key}.sorted", layer.order], name=f"{base}.topk", axis=0, largest=0, sorted=1),  # [N] token ids
        _node("Expand", [f"{base}.ones", n], f"{base}.unit"),  # [N] of 1
        _node("ScatterElements", [f"{base}.empty", layer.route, f"{base}.unit"], f"{base}.counts", axis=0, reduction="add"),  # [T]
        _node("Gather", [layer.x, layer.order], f"{base}.sorted", axis=0),  # [N, d] in tile order
        _node("Split", [f"{base}.sorted", f"{base}.counts"], list(layer.rows), name=f"{base}.split", axis=0),  # T x [N_t, d]
    ]
    return nodes, consts


def _hoist(layer: _Layer, base: str, reads, inits: dict, ranks: dict,
           outputs: set[str]) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], set[str]]:
    """(nodes, initializers, outputs of the nodes removed): the tiles' elementwise runs done once per layer; nothing where the bodies differ."""
    chains = _chains(layer, reads, outputs)
    if chains is None or ranks.get(layer.x) != 2:
        return [], [], set()
    kinds = [_kind([chain[k] for chain in chains], inits) for k in range(len(chains[0]))]
    if not any(kinds) or not all(kinds[k] or all(ranks.get(c[k].output[0]) == 2 for c in chains) for k in range(len(kinds))):
        return [], [], set()  # nothing to hoist, or a tile node whose output is not [rows, features]: [N, 1] constants would not broadcast
    counts, nodes, consts, gone = f"{base}.counts", [], [], set()
    nodes.append(_node("Gather", [layer.route, layer.order], f"{base}.routes", axis=0))  # [N]: each sorted row's tile
    consts.append(lowbit.constant(f"{base}.axis1", np.array([1], np.int64)))
    k, current = 0, list(layer.rows)
    while k < len(kinds):
        if not kinds[k]:
            current = [chain[k].output[0] for chain in chains]
            k += 1
            continue
        end = next((j for j in range(k, len(kinds)) if not kinds[j]), len(kinds))
        value = f"{base}.{k}.cat"
        nodes.append(_node("Concat", current, value, axis=0))  # [N, f] in tile order
        for j in range(k, end):
            last = j == end - 1 and end == len(kinds)
            out = layer.outs.output[0] if last else f"{base}.{j}.all"
            made, const = _once([chain[j] for chain in chains], value, out, f"{base}.{j}", kinds[j], inits, f"{base}.routes", f"{base}.axis1")
            nodes += made
            consts += const
            value = out
            gone |= {chain[j].output[0] for chain in chains}
        if end < len(kinds):  # back to the tiles, under the names their next nodes read
            nodes.append(_node("Split", [value, counts], [chain[end - 1].output[0] for chain in chains], name=f"{base}.{end}.split", axis=0))
        k = end
    if kinds[-1] is not None:  # the bodies end in a hoisted node, which writes the outputs' Concat's value: the Concat goes
        gone.add(layer.outs.output[0])
    return nodes, consts, gone


def _chains(layer: _Layer, reads, outputs: set[str]) -> list[list[onnx.NodeProto]] | None:
    """Per tile, its body as a chain of single-reader nodes from its rows to the outputs' Concat; None if not all alike."""
    if layer.outs is None:
        return None
    chains = []
    for t, rows in enumerate(layer.rows):
        chain, value = [], rows
        while True:
            r = reads.get(value, [])
            if len(r) != 1 or value in outputs:  # a value the graph also returns must keep its node
                return None
            node, slot = r[0]
            if node is layer.outs:
                break
            if len(node.output) != 1 or slot != 0 and node.op_type not in BINARY:
                return None
            chain.append(node)
            value = node.output[0]
        if layer.outs.input[t] != value:
            return None
        chains.append(chain)
    if len({tuple(n.op_type for n in chain) for chain in chains}) != 1 or not chains[0]:
        return None
    return chains


def _kind(nodes: list[onnx.NodeProto], inits: dict) -> tuple | None:
    """How the tiles' nodes at one chain position are hoisted: ("unary",) or ("binary", chain operand index); None: kept per tile."""
    first = nodes[0]
    same_attrs = all([a.SerializeToString() for a in n.attribute] == [a.SerializeToString() for a in first.attribute] for n in nodes)
    if first.domain not in ("", "ai.onnx") or not same_attrs:
        return None
    if first.op_type in UNARY and len(first.input) == 1:
        return ("unary",)
    if first.op_type not in BINARY or len(first.input) != 2:
        return None
    sides = {0 if n.input[1] in inits else 1 if n.input[0] in inits else None for n in nodes}
    side = sides.pop() if len(sides) == 1 else None
    if side is None:
        return None
    scalars = [inits[n.input[1 - side]] for n in nodes]
    if any(s.dims or s.data_type != scalars[0].data_type for s in scalars):
        return None
    return ("binary", side)


def _once(nodes: list[onnx.NodeProto], value: str, out: str, name: str, kind: tuple,
          inits: dict, routes: str, axis1: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The tiles' nodes at one chain position as one node on all sorted rows (`value`, [N, f]) -> `out`."""
    first = nodes[0]
    if kind[0] == "unary":
        node = helper.make_node(first.op_type, [value], [out], name=out)
        node.attribute.extend(first.attribute)
        return [node], []
    side = kind[1]
    constants = [n.input[1 - side] for n in nodes]
    if len(set(constants)) == 1:  # one constant for every tile
        operand, made, consts = constants[0], [], []
    else:
        table = f"{name}.per_tile"
        consts = [lowbit.constant(table, np.stack([numpy_helper.to_array(inits[c]) for c in constants]))]  # [T]
        made = [_node("Gather", [table, routes], f"{name}.per_row", axis=0),  # [N]: each sorted row's tile's constant
                _node("Unsqueeze", [f"{name}.per_row", axis1], f"{name}.column")]  # [N, 1]
        operand = f"{name}.column"
    inputs = [value, operand] if side == 0 else [operand, value]
    return [*made, _node(first.op_type, inputs, out)], consts


def _find(model: onnx.ModelProto, reads: dict, outputs: set[str]) -> list[_Layer]:
    """Every ScatterND whose indices are Unsqueeze(Concat(idx_t)) of complete per-tile NonZero chains over t = 0..T-1."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    scalars = {i.name: int(numpy_helper.to_array(i)) for i in graph.initializer
               if i.data_type in (TensorProto.INT64, TensorProto.INT32) and not i.dims}
    vectors = {i.name: numpy_helper.to_array(i).tolist() for i in graph.initializer if i.data_type == TensorProto.INT64 and len(i.dims) == 1}

    def sole_reader(value: str) -> onnx.NodeProto | None:
        r = reads.get(value, [])
        return r[0][0] if len(r) == 1 and value not in outputs else None

    def made_by(value: str, op: str) -> onnx.NodeProto | None:
        node = producer.get(value)
        return node if node is not None and node.op_type == op else None

    def tile(index: str):
        """(route, t, x, rows, nodes) of idx_t = Squeeze(Transpose(NonZero(Equal(route, t))), [1]), read by the index Concat and one row gather."""
        squeeze = made_by(index, "Squeeze")
        transpose = squeeze and len(squeeze.input) == 2 and vectors.get(squeeze.input[1]) == [1] and made_by(squeeze.input[0], "Transpose")
        nonzero = transpose and list(attrs(transpose).get("perm", [])) == [1, 0] and made_by(transpose.input[0], "NonZero")
        equal = nonzero and made_by(nonzero.input[0], "Equal")
        if not equal or equal.input[1] not in scalars or any(sole_reader(n.output[0]) is None for n in (equal, nonzero, transpose)):
            return None
        chain = [equal, nonzero, transpose, squeeze]
        others = [node for node, _ in reads.get(index, []) if node.op_type != "Concat"]
        if len(others) != 1 or len(reads[index]) != 2 or index in outputs:
            return None
        gather = others[0]
        if gather.op_type == "Reshape" and vectors.get(gather.input[1]) == [-1] and sole_reader(gather.output[0]) is not None:
            chain.append(gather)
            gather = sole_reader(gather.output[0])
        if gather.op_type != "Gather" or attrs(gather).get("axis", 0) != 0 or gather.input[1] != chain[-1].output[0]:
            return None
        return equal.input[0], scalars[equal.input[1]], gather.input[0], gather.output[0], [*chain, gather]

    layers = []
    for scatter in (node for node in graph.node if node.op_type == "ScatterND"):
        unsqueeze = made_by(scatter.input[1], "Unsqueeze")
        concat = unsqueeze and sole_reader(unsqueeze.output[0]) is not None and made_by(unsqueeze.input[0], "Concat")
        if not concat or attrs(concat).get("axis") != 0 or sole_reader(concat.output[0]) is None:  # one layer per index Concat
            continue
        found = [tile(index) for index in concat.input]
        if not found or any(f is None for f in found):
            continue
        routes, xs = {f[0] for f in found}, {f[2] for f in found}
        if len(routes) != 1 or len(xs) != 1 or [f[1] for f in found] != list(range(len(found))):
            continue
        outs = made_by(scatter.input[2], "Concat")
        if not outs or attrs(outs).get("axis") != 0 or len(outs.input) != len(found) or sole_reader(outs.output[0]) is None:
            outs = None
        layers.append(_Layer(routes.pop(), xs.pop(), [f[3] for f in found], concat.output[0],
                             [node for f in found for node in f[4]] + [concat], outs))
    return layers


def _node(op: str, inputs: list[str], outputs: str | list[str], *, name: str | None = None, **kw) -> onnx.NodeProto:
    """A node named after its (first) output unless named."""
    outputs = [outputs] if isinstance(outputs, str) else outputs
    return helper.make_node(op, inputs, outputs, name=name or outputs[0], **kw)
