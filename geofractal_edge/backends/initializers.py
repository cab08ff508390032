"""What a graph's weights weigh, read from model.onnx without the onnx package (the device has none).

ONNX files are protobuf; this walks only the fields that hold tensors (ModelProto.graph ->
GraphProto.initializer / sparse_initializer, and tensor attributes of nodes such as Constant,
subgraphs included) and skips every payload by its length, so a 90 MB graph costs one read. A
tensor weighs its raw bytes; one stored outside the file (external data, e.g. 2-bit packed TriX
codes the runtime hands to onnxruntime) weighs its declared `length`, else its dims x its type's
bits. Field numbers are onnx.proto's, which ONNX keeps stable.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from geofractal_edge.errors import BundleError

# TensorProto.DataType -> bits per element (STRING has no fixed size and counts 0).
_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64, 14: 64, 15: 128, 16: 16,
         17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2}
_MODEL_GRAPH, _GRAPH_NODE, _GRAPH_INIT, _GRAPH_SPARSE_INIT = 7, 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2


def graph_weight_bytes(model_path: Path) -> int:
    """Bytes of every initializer and tensor attribute in the graph, external data included."""
    data = memoryview(Path(model_path).read_bytes())
    try:
        return sum(_graph(v) for num, v in _fields(data) if num == _MODEL_GRAPH)
    except (IndexError, ValueError) as exc:
        raise BundleError(f"{Path(model_path).name} is not a readable ONNX file ({exc})", "re-export the bundle with `gfedge export`") from None


def _graph(buf: memoryview) -> int:
    total = 0
    for num, v in _fields(buf):
        if num == _GRAPH_INIT:
            total += _tensor(v)
        elif num == _GRAPH_SPARSE_INIT:
            total += _sparse(v)
        elif num == _GRAPH_NODE:
            total += sum(_attribute(a) for n, a in _fields(v) if n == _NODE_ATTRIBUTE)
    return total


def _attribute(buf: memoryview) -> int:
    total = 0
    for num, v in _fields(buf):
        if num in (_ATTR_T, _ATTR_TENSORS):
            total += _tensor(v)
        elif num in (_ATTR_G, _ATTR_GRAPHS):
            total += _graph(v)
        elif num in (_ATTR_SPARSE, _ATTR_SPARSES):
            total += _sparse(v)
    return total


def _sparse(buf: memoryview) -> int:
    return sum(_tensor(v) for num, v in _fields(buf) if num in (_SPARSE_VALUES, _SPARSE_INDICES))


def _tensor(buf: memoryview) -> int:
    """TensorProto: dims=1, data_type=2, raw_data=9, external_data=13 (key=1, value=2), data_location=14."""
    dims, dtype, raw, length, external = [], 0, None, None, False
    for num, v in _fields(buf):
        if num == 1:
            dims.extend([v] if isinstance(v, int) else _packed(v))
        elif num == 2:
            dtype = v
        elif num == 9:
            raw = len(v)
        elif num == 13:
            entry = {n: bytes(x).decode("utf-8", "replace") for n, x in _fields(v)}
            if entry.get(1) == "length" and entry.get(2, "").isdigit():
                length = int(entry[2])
        elif num == 14:
            external = v == 1
    if raw is not None and not external:
        return raw
    if external and length is not None:
        return length
    return (math.prod(dims) * _BITS.get(dtype, 0) + 7) // 8


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of one protobuf message: ints for varints, views for everything else."""
    i, end = 0, len(buf)
    while i < end:
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, i = buf[i:i + width], i + width
        else:
            raise ValueError(f"wire type {wire} at byte {i}")
        if i > end:
            raise ValueError("a field runs past its message")
        yield key >> 3, value


def _packed(buf: memoryview) -> list[int]:
    out, i = [], 0
    while i < len(buf):
        value, i = _varint(buf, i)
        out.append(value)
    return out


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError(f"a varint longer than 10 bytes at byte {i}")
