"""The TensorRT form of ternary weights: blocked INT4 `DequantizeLinear` with unit scales, zero point 0.

Written at export for targets whose weight dialect is "qdq" (export/ternary.py): each ternary code
tensor X [..., r, c] becomes DQ(codes as INT4, ones, axis, block_size), so the DQ output is exactly
the code {-1, 0, +1}, and the graph's own tile-scale multiply stays as torch traced it: the scales
are applied to the matmul outputs (models/trix/lowering.py), so the graph computes (codes @ x) * scale
as torch does, and the scale tensors keep their float32 values. Nothing is rounded anywhere.

Why unit scales and not the tile scale as the block scale (the earlier form): a tile has one scale,
so a per-block copy of it is redundant, and as float32 per 32-wide block those copies were 9% of a
TriX int4 bundle's weight bytes (shipped default, jetson-orin: 32,768 of 367,624 B; ratio 0.213 of
the float32 graph, over the 0.20 gate). Unit scales are the same for every tile, so one tensor per
shape serves every DQ of that shape, at the largest block TensorRT documents that divides one of the tile's last two dimensions;
where neither 64 nor 128 divides, one block spans the longer dimension, a size TensorRT does not
document (block_layout).

What TensorRT documents for INT4 DequantizeLinear (read when this was written; no TensorRT here to try it):
* "Quantization Schemes", TensorRT docs, latest (11.x)
  (https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/quantized-types-schemes.html):
  INT4 is weight-only and "requires per-block scales. The supported block sizes are {64, 128}. The
  block dimension should be one of the last two dimensions"; the block's scale is "a 16-bit or
  32-bit floating point". Per-tensor or per-channel INT4 (one scale per tile) is therefore not an
  option, and blocks of 32 (the earlier form) are outside the documented sizes. The 10.3 edition of
  that page was not available to read.
* IDequantizeLayer, NvInfer.h (TensorRT 10 C++ API,
  https://docs.nvidia.com/deeplearning/tensorrt/api/c_api/classnvinfer1_1_1_i_dequantize_layer.html):
  symmetric only, all scale coefficients strictly positive (1 is); for block quantization the scale
  has the input's shape except in the one blocked dimension (the last or second to last).
* onnx-tensorrt's DequantizeLinear importer (github.com/onnx/onnx-tensorrt, onnxOpImporters.cpp,
  QuantDequantLinearHelper, 10.1-GA): float32, float16 and bfloat16 scales are read; in a strongly
  typed network the DQ output type is the scale's type, so scales in the graph's float type need no
  Cast; the block is inferred as input dims / scale dims with exactly one dimension blocked, so the
  block must divide that dimension (block_layout makes it).
* ONNX DequantizeLinear (opset 21, https://onnx.ai/onnx/operators/onnx__DequantizeLinear.html):
  y has x_scale's type; blocked quantization takes `axis` and `block_size`, the scale has x's rank
  and ceil(x.shape[axis] / block_size) along `axis`.
Open: TensorRT's older Dequantize operator page says a block-quantization scale is 2-D; TriX tiles
are 3-D [tiles, rows, cols] (in this form as in the earlier one). Only a TensorRT build can tell.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from geofractal_edge.errors import Bug
from geofractal_edge.export import lowbit

TRT_INT4_BLOCK_SIZES = (128, 64)  # TensorRT's documented INT4 block sizes, largest first


def block_layout(shape: tuple[int, ...]) -> tuple[int, int]:
    """(axis, block_size) for a code tensor of `shape`: the fewest scales with a TensorRT block size that divides
    one of the last two dimensions; when none divides, one block covering the longer of the two."""
    axes = list(range(max(0, len(shape) - 2), len(shape)))
    for size in TRT_INT4_BLOCK_SIZES:
        fits = [a for a in axes if shape[a] % size == 0]
        if fits:
            return max(fits, key=lambda a: (shape[a], a)), size
    axis = max(axes, key=lambda a: (shape[a], a))
    return axis, shape[axis]


def ternary_to_int4_dq(model: onnx.ModelProto, codes: dict[str, np.ndarray], pairs: tuple[tuple[str, str], ...]) -> onnx.ModelProto:
    """Return a copy of `model` whose ternary initializers (named in `pairs`, values in `codes`) are INT4 DequantizeLinear
    outputs with unit scales; the pairs' scale tensors are left as they are (the graph applies them).

    `codes` must hold only -1, 0 and +1: `export.ternary.lower_ternary` checks that before it calls this."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {init.name: init for init in out.graph.initializer}
    nodes, ones = [], {}
    for code_name, scale_name in pairs:
        if code_name not in codes or code_name not in inits or scale_name not in inits:
            raise Bug(f"ternary pair ({code_name}, {scale_name}) is not in the graph and pack")
        dtype = inits[code_name].data_type  # the graph's float type: the DQ's output type is its scale's
        q = codes[code_name].astype(np.int8)
        axis, block = block_layout(q.shape)
        scale_shape = tuple(-(-n // block) if i == axis else n for i, n in enumerate(q.shape))
        unit = f"ternary.int4_unit_scale.{dtype}.{'x'.join(map(str, scale_shape))}"
        if unit not in ones:  # one tensor of ones per shape and type, shared by every DQ that has it
            ones[unit] = numpy_helper.from_array(np.ones(scale_shape, helper.tensor_dtype_to_np_dtype(dtype)), unit)
        out.graph.initializer.remove(inits[code_name])
        out.graph.initializer.append(helper.make_tensor(f"{code_name}.int4", TensorProto.INT4, q.shape, q.reshape(-1).tolist()))
        nodes.append(helper.make_node("DequantizeLinear", [f"{code_name}.int4", unit], [code_name],
                                      name=f"{code_name}.dequantize", axis=axis, block_size=block))
    out.graph.initializer.extend(ones.values())
    graph_nodes = list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes + graph_nodes)
    return lowbit.require_opset(out, lowbit.INT4_OPSET)
