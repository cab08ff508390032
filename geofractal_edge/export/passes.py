"""Small ONNX graph passes and node builders the quantizers and the ternary lowering share (onnx only, no torch)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from geofractal_edge.errors import Bug
from geofractal_edge.export import lowbit


def attrs(node: onnx.NodeProto) -> dict:
    """A node's attributes by name, as Python values; one left out takes the operator's default (`.get(name, default)`)."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def readers(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    """tensor name -> [(node, input index)] of every node that reads it."""
    out: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            out.setdefault(name, []).append((node, i))
    return out


def check_full(model: onnx.ModelProto, what: str) -> onnx.ModelProto:
    """`model` once it passes onnx's full check (strict shape inference included): every bundle's model.onnx
    must. A Bug naming `what` (the graph that failed) otherwise."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise Bug(f"{what} is not valid ONNX: {str(exc).splitlines()[0]}") from exc
    return model


def per_slice(node: onnx.NodeProto, operand: int, count: int, tag: str,
              body: Callable[[int, str, str, str], list[onnx.NodeProto]]) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """A batched MatMul `node` as one product per slice of the leading axis of X = node.input[operand], for operators
    that take one 2-D weight (MatMulNBits, DynamicQuantizeMatMul): Split X, `body` per slice, Concat. X's leading axis
    must be `count` long (a collective's stacked streams, a TriX layer's tiles), not a [1, ...] that broadcasts.
    Returns the nodes that replace `node` and the constant they read.

    `body(t, x, y, name)`: the nodes computing slice t's product `y` from the slice `x`, which keeps its leading axis
    of 1 (a MatMul-like operator broadcasts over it; a Gather and an Unsqueeze per slice would add 2 x count - 1
    nodes, and onnxruntime holds a few KiB per node and launches each on every call); `name` (node name, tag, t)
    prefixes what they name. Split's sizes are its input, which needs opset 13 or later; graphs traced by torch's
    exporter are opset 18 or later.
    """
    base = f"{node.name or node.output[0]}.{tag}"
    xs = [f"{base}.{t}.x" for t in range(count)]
    nodes = [helper.make_node("Split", [node.input[operand], f"{base}.sizes"], xs, name=f"{base}.split", axis=0)]
    for t in range(count):
        nodes += body(t, xs[t], f"{base}.{t}.y", f"{base}.{t}")
    nodes.append(helper.make_node("Concat", [f"{base}.{t}.y" for t in range(count)], [node.output[0]], name=f"{base}.concat", axis=0))
    return nodes, [lowbit.constant(f"{base}.sizes", np.ones(count, np.int64))]


def gemm_to_matmul(model: onnx.ModelProto, *, keep: tuple[str, ...] = ()) -> onnx.ModelProto:
    """Rewrite Gemm(A, W, b) with a constant W as MatMul(A, W') + b.

    ORT's weight-only quantizers read MatMul only. A weight shared by several Gemms (Atlas iterates
    one block T times) gets one transposed initializer, so it stays shared after the rewrite.
    Gemms reading a weight in `keep` are left as they are (those stay float, under their own name).
    """
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    transposed: dict[str, str] = {}
    nodes = []
    for node in graph.node:
        a = attrs(node)
        convertible = (
            node.op_type == "Gemm"
            and node.input[1] in inits
            and node.input[1] not in keep
            and a.get("transA", 0) == 0
            and a.get("alpha", 1.0) == 1.0
            and a.get("beta", 1.0) == 1.0
        )
        if not convertible:
            nodes.append(node)
            continue
        weight = node.input[1]
        if a.get("transB", 0):
            if weight not in transposed:
                array = numpy_helper.to_array(inits[weight]).T.copy()
                name = f"{weight}.T"
                graph.initializer.append(numpy_helper.from_array(array, name))
                transposed[weight] = name
            weight = transposed[weight]
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{node.output[0]}.mm" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [mm_out], name=f"{node.name}.matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=f"{node.name}.bias"))
    del graph.node[:]
    graph.node.extend(nodes)
    drop_unused_initializers(model)
    return model


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Remove initializers no node (and no graph output) reads."""
    used = {name for node in model.graph.node for name in node.input}
    used |= {out.name for out in model.graph.output}
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def dedupe_producers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Keep one of several identical nodes that produce the same output.

    ORT's weight-only quantizer emits one DequantizeLinear per use of a weight; a weight shared by
    T iterations then has T producers of one tensor name, which is invalid ONNX.
    """
    seen: dict[str, bytes] = {}
    nodes = []
    for node in model.graph.node:
        anonymous = onnx.NodeProto()
        anonymous.CopyFrom(node)
        anonymous.name = ""
        body = anonymous.SerializeToString()
        outs = tuple(node.output)
        if outs and all(o in seen for o in outs):
            if all(seen[o] == body for o in outs):
                continue
            raise ValueError(f"two different nodes produce {outs}")
        for out in outs:
            seen[out] = body
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def toposort(model: onnx.ModelProto) -> onnx.ModelProto:
    """Order nodes so each comes after its producers (ORT's fp16 converter appends casts at the end)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input near node {rest[0].name}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
    return model


def dedupe_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Keep one of several initializers of the same name (ORT's weight-only quantizer writes a weight
    shared by T matmuls T times). Same-named initializers with different contents are a bug.

    Only the repeated names are compared (type, shape, then values), so a large graph's weights are
    not all serialized to find the few copies.
    """
    first: dict[str, onnx.TensorProto] = {}
    keep = []
    for init in model.graph.initializer:
        if init.name not in first:
            first[init.name] = init
            keep.append(init)
        elif not _same_tensor(first[init.name], init):
            raise ValueError(f"two different initializers are named {init.name}")
    if len(keep) < len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return model


def _same_tensor(a: onnx.TensorProto, b: onnx.TensorProto) -> bool:
    """Same element type, shape and value bytes (however each stores its data)."""
    if a.data_type != b.data_type or list(a.dims) != list(b.dims):
        return False
    return numpy_helper.to_array(a).tobytes() == numpy_helper.to_array(b).tobytes()
