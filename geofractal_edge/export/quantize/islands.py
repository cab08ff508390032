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


_PASS_THROUGH = {"Gather", "Cast", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Identity"}


def consumers(model: onnx.ModelProto, tensors: tuple[str, ...]) -> list[str]:
    """Names of nodes that read `tensors`, directly or through shape-only ops and gathers.

    The quantizers exclude these nodes so that ternary weights reach the graph untouched.
    """
    frontier, found = set(tensors), []
    changed = True
    while changed:
        changed = False
        for node in model.graph.node:
            if node.name in found or not any(i in frontier for i in node.input):
                continue
            found.append(node.name)
            changed = True
            if node.op_type in _PASS_THROUGH:
                frontier.update(node.output)
    return found
