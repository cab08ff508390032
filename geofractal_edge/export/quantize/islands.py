"""Find the float32 feature stage of a graph: what an input flows through before the first weight.

Atlas multiplies a coordinate in [0,1] by frequencies up to ~pi*N before sin/cos. In fp16 (11-bit
mantissa) that product cannot tell neighbouring characters apart, so those nodes must stay float32.
"""

from __future__ import annotations

import onnx

_WEIGHTED = {"Gemm", "MatMul", "Conv", "MatMulNBits"}


def feature_stage(model: onnx.ModelProto, inputs: tuple[str, ...]) -> list[str]:
    """Names of nodes downstream of `inputs`, stopping at (and excluding) weighted ops."""
    frontier = set(inputs)
    stage: list[str] = []
    changed = True
    while changed:
        changed = False
        for node in model.graph.node:
            if node.name in stage or node.op_type in _WEIGHTED:
                continue
            if any(i in frontier for i in node.input):
                stage.append(node.name)
                frontier.update(node.output)
                changed = True
    return stage
