"""Low-bit weights as ONNX nodes, in the dialect a target profile names (`TargetProfile.weight_dialect`).

* ``ort``: onnxruntime's ``com.microsoft`` operators, which keep the weights packed in the session:
  ``MatMulNBits`` (Y = A @ W^T with W [N, K] stored as [N, k_blocks, block_size * bits / 8] uint8,
  codes low-first along K, one scale per block and row, code - zero_point) and
  ``GatherBlockQuantized`` (the same codes, gathered row-wise before they are dequantized).
* ``qdq``: standard ``DequantizeLinear`` (INT4 blocked, zero point 0): what TensorRT builds from.

The quantization itself is onnxruntime's (`DefaultWeightOnlyQuantizer`); this module packs exact
integer codes (TriX's ternary tiles) and writes the nodes. numpy and onnx only.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"
INT4_OPSET = 21  # INT4 tensors and blocked DequantizeLinear
TERNARY_ZERO_POINT = 2  # MatMulNBits' and GatherBlockQuantized's default for bits=2: code = value + 2


def pack_low_first(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes [..., K] (K a multiple of 8 // bits) -> uint8 [..., K * bits / 8], code i at bits*(i % per_byte)."""
    per_byte = 8 // bits
    grouped = codes.astype(np.uint8).reshape(*codes.shape[:-1], -1, per_byte)  # [..., K / per_byte, per_byte]
    packed = np.zeros(grouped.shape[:-1], np.uint8)
    for i in range(per_byte):
        packed |= grouped[..., i] << np.uint8(bits * i)
    return packed


def block_size_for(k: int, *, largest: int = 128) -> int:
    """The smallest power of two >= 16 that covers K, up to `largest`: one scale per row when K is small."""
    size = 16
    while size < min(k, largest):
        size *= 2
    return size


def ternary_blocks(values: np.ndarray, block_size: int) -> np.ndarray:
    """{-1, 0, +1} [..., K] -> 2-bit codes value + 2 (1, 2, 3; 0 never occurs) packed per block:
    uint8 [..., k_blocks, block_size / 4], K padded with zeros (code 2) to whole blocks.

    2 is the 2-bit operators' default zero point, so the graph needs no zero-point tensor.
    """
    k = values.shape[-1]
    blocks = -(-k // block_size)
    codes = np.full((*values.shape[:-1], blocks * block_size), TERNARY_ZERO_POINT, np.uint8)
    codes[..., :k] = (values + TERNARY_ZERO_POINT).astype(np.uint8)
    return pack_low_first(codes, 2).reshape(*values.shape[:-1], blocks, block_size // 4)


def matmul_nbits(a: str, out: str, *, name: str, packed: str, scales: str, k: int, n: int, bits: int, block_size: int,
                 zero_points: str | None = None, accuracy_level: int = 0) -> onnx.NodeProto:
    """out [..., N] = a [..., K] @ W^T, W [N, K] the dequantized `packed` weight; accuracy_level 0: float32 arithmetic."""
    inputs = [a, packed, scales] + ([zero_points] if zero_points else [])
    extra = {"accuracy_level": accuracy_level} if accuracy_level else {}
    return helper.make_node("MatMulNBits", inputs, [out], name=name, domain=MS_DOMAIN, K=k, N=n, bits=bits, block_size=block_size, **extra)


def gather_block_quantized(data: str, indices: str, out: str, *, name: str, scales: str, zero_points: str | None, bits: int,
                           block_size: int, quantize_axis: int, gather_axis: int = 0) -> onnx.NodeProto:
    inputs = [data, indices, scales] + ([zero_points] if zero_points else [])
    return helper.make_node("GatherBlockQuantized", inputs, [out], name=name, domain=MS_DOMAIN, bits=bits, block_size=block_size,
                            quantize_axis=quantize_axis, gather_axis=gather_axis)


def int4_tensor(name: str, packed: np.ndarray, shape: tuple[int, ...], *, kind: int = TensorProto.INT4) -> TensorProto:
    """An INT4 (or UINT4) initializer of `shape` from two-per-byte packed bytes (low nibble first, ONNX's order)."""
    return helper.make_tensor(name, kind, list(shape), packed.tobytes(), raw=True)


def use_ms_domain(model: onnx.ModelProto) -> None:
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


def constant(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.array(array, order="C"), name)  # (ascontiguousarray would make a scalar 1-d)


def require_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """Raise the default-domain opset (and the IR version it needs) to at least `version`.

    Our graphs use no op whose meaning changed up to opset 21; the full ONNX checker runs on the
    final graph afterwards (the quantize step, or the ternary lowering when the spec has ternary weights).
    """
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < version:
            opset.version = version
    model.ir_version = max(model.ir_version, 10)
    return model
