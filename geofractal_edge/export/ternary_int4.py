"""The TensorRT form of ternary weights: blocked INT4 `DequantizeLinear`, zero point 0.

Written at export for targets whose weight dialect is "qdq" (export/ternary.py): each ternary code
tensor X [..., d] becomes DQ(codes as INT4, scale, axis=-1, block_size) whose scale is the tile's
scale in every block, so the DQ output is exactly code x scale, the torch ternary weight. The graph's
own scale multiplies then become 1. {-1, 0, +1} x scale is exact in INT4, so nothing is lost.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from geofractal_edge.errors import Bug
from geofractal_edge.export import lowbit

BLOCK_SIZE = 32


def ternary_to_int4_dq(model: onnx.ModelProto, codes: dict[str, np.ndarray], pairs: tuple[tuple[str, str], ...], *,
                       block_size: int = BLOCK_SIZE) -> onnx.ModelProto:
    """Return a copy of `model` whose ternary initializers (named in `pairs`, values in `codes`) are INT4 DequantizeLinear outputs."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {init.name: init for init in out.graph.initializer}
    nodes = []
    for code_name, scale_name in pairs:
        if code_name not in codes or scale_name not in inits:
            raise Bug(f"ternary pair ({code_name}, {scale_name}) is not in the graph and pack")
        scale_init = inits[scale_name]
        tile_scale = numpy_helper.to_array(scale_init)  # [n]
        q = codes[code_name].astype(np.int8)  # [n, ..., d]
        blocks = -(-q.shape[-1] // block_size)
        block_scale = np.broadcast_to(tile_scale.reshape((-1,) + (1,) * (q.ndim - 1)), q.shape[:-1] + (blocks,)).astype(tile_scale.dtype)
        out.graph.initializer.remove(inits[code_name])
        out.graph.initializer.extend([
            helper.make_tensor(f"{code_name}.int4", TensorProto.INT4, q.shape, q.reshape(-1).tolist()),
            numpy_helper.from_array(np.ascontiguousarray(block_scale), f"{code_name}.int4_scale"),
        ])
        nodes.append(helper.make_node("DequantizeLinear", [f"{code_name}.int4", f"{code_name}.int4_scale"], [code_name],
                                      name=f"{code_name}.dequantize", axis=q.ndim - 1, block_size=block_size))
        scale_init.CopyFrom(numpy_helper.from_array(np.ones_like(tile_scale), scale_name))  # the scale now sits in the DQ
    graph_nodes = list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes + graph_nodes)
    return lowbit.require_opset(out, lowbit.INT4_OPSET)
