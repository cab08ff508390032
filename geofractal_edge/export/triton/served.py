"""The graph Triton serves: the bundle's graph, its outputs made batch-major where needed.

Triton batches along the first dimension of every input and output. A routed model's diagnostic
outputs lead with the router axis (collective `routes` [streams, batch, slots, K], TriX `margins`
[layers, batch, context]), as parity's route agreement wants, so the served graph appends one
Transpose per such output that moves "batch" to the front, under the output's own name (the
tensor it transposes is renamed `<name>__bundle_layout`). The bundle and its parity contract stay
as they are; only the repository's model.onnx and config.pbtxt carry the new layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from geofractal_edge.artifacts import Bundle
from geofractal_edge.artifacts.manifest import TensorDecl
from geofractal_edge.backends.lazy import require
from geofractal_edge.backends.tensorrt.loader import standalone_onnx
from geofractal_edge.errors import Bug

BATCH = "batch"  # a spec declares Triton's batch axis by naming the leading dynamic dimension so
BUNDLE_LAYOUT = "__bundle_layout"  # suffix of a transposed output's tensor as the bundle computes it


@dataclass(frozen=True)
class ServedGraph:
    """What one Triton model runs: ONNX bytes and the tensors it declares."""

    onnx: bytes
    inputs: tuple[TensorDecl, ...]
    outputs: tuple[TensorDecl, ...]
    transposed: dict[str, tuple[int, ...]] = field(default_factory=dict)  # output -> perm of the bundle's axes


def batch_dim(graph) -> str | None:
    """The batch dimension, when every input and output of `graph` (a Manifest or ServedGraph) leads with "batch".

    Only a declared name counts: a shared leading dimension alone (Atlas's coordinate count `n`)
    does not say that rows are independent requests, so Triton must not stack them.
    """
    firsts = {tuple(t.shape[:1]) for t in graph.inputs + graph.outputs}
    return BATCH if firsts == {(BATCH,)} else None


def batch_major(decl: TensorDecl) -> tuple[int, ...] | None:
    """The permutation that moves "batch" to the front of `decl`, or None if it leads already or has none."""
    if list(decl.shape).count(BATCH) != 1 or decl.shape[0] == BATCH:
        return None
    at = decl.shape.index(BATCH)
    return (at, *(i for i in range(len(decl.shape)) if i != at))


def served_graph(bundle: Bundle) -> ServedGraph:
    """The bundle's graph, standalone; outputs transposed batch-major when that makes the whole model batchable."""
    m = bundle.manifest
    batchable = all(t.shape[:1] == (BATCH,) for t in m.inputs) and all(BATCH in t.shape for t in m.outputs)
    perms = {t.name: p for t in m.outputs if batchable and (p := batch_major(t)) is not None}
    data = standalone_onnx(bundle)
    if not perms:
        return ServedGraph(onnx=data, inputs=m.inputs, outputs=m.outputs)
    outputs = tuple(replace(t, shape=tuple(t.shape[i] for i in perms[t.name])) if t.name in perms else t for t in m.outputs)
    return ServedGraph(onnx=transpose_outputs(data, perms), inputs=m.inputs, outputs=outputs, transposed=perms)


def transpose_outputs(data: bytes, perms: dict[str, tuple[int, ...]]) -> bytes:
    """ONNX bytes with each output in `perms` computed as before, then transposed by its perm, same name."""
    onnx = require("onnx")
    model = onnx.load_from_string(data)
    graph = model.graph
    for name, perm in perms.items():
        inner = name + BUNDLE_LAYOUT
        produced = False
        for node in graph.node:  # the producer and any consumer inside the graph now use the inner name
            for slots, is_output in ((node.output, True), (node.input, False)):
                for i, tensor in enumerate(slots):
                    if tensor == name:
                        slots[i] = inner
                        produced |= is_output
        if not produced:
            raise Bug(f"graph output '{name}' is not produced by a node; cannot transpose it")
        graph.node.append(onnx.helper.make_node("Transpose", [inner], [name], perm=list(perm), name=f"gfedge_batch_major_{name}"))
        for info in graph.value_info:
            if info.name == name:
                info.name = inner
        declared = next(o for o in graph.output if o.name == name)
        dims = [d.dim_param or d.dim_value or None for d in declared.type.tensor_type.shape.dim]
        declared.CopyFrom(onnx.helper.make_tensor_value_info(name, declared.type.tensor_type.elem_type, [dims[i] for i in perm]))
    return model.SerializeToString()
