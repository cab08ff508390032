"""Tensors between the wire and numpy, each checked against the model's manifest before it is built.

`check` looks only at what a request declares and how much it sends: names, datatypes, the
declared shape against the manifest's dims and `dim_ranges` (`backends.inputs.check_shape`), the
number of JSON values or binary bytes against that shape. A request over a bound is refused
naming the bound before any array exists. `decode` then builds the arrays without checking again
what `check` checked: JSON lists through `runtimes.io.json_values`, which looks only at the values
(no coercion: an integer input refuses 1.5, a float input refuses true), binary tensors from their
little-endian bytes (`np.frombuffer`, copied so the body can be freed). Declared value ranges are
checked once, by the zoo (`Entry.feeds`), as for any caller. `encode` turns outputs into OIP
output tensors: JSON lists (flattened, row-major), or bytes for the binary tensor extension.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from geofractal_edge.artifacts.manifest import DimRange, TensorDecl
from geofractal_edge.backends.inputs import check_names, check_shape
from geofractal_edge.errors import InputError
from geofractal_edge.runtimes.io import json_values, nested_shape
from geofractal_edge.runtimes.zoo.serving.protocol import OutputWanted, TensorIn

DATATYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int64": "INT64", "int32": "INT32", "int16": "INT16",
             "int8": "INT8", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64", "bool": "BOOL"}


def metadata(decl: TensorDecl) -> dict:
    """A manifest declaration as OIP tensor metadata: named dynamic dims become -1."""
    return {"name": decl.name, "datatype": DATATYPES[decl.dtype], "shape": [d if isinstance(d, int) else -1 for d in decl.shape]}


def check(tensors: Sequence[TensorIn], decls: Sequence[TensorDecl], ranges: Mapping[str, DimRange], *, binary_bytes: int) -> None:
    """Everything that can be known before decoding; InputError naming the first problem."""
    by_name = {d.name: d for d in decls}
    check_names({t.name: None for t in tensors}, decls)
    dims: dict = {}
    expected_binary = 0
    for tensor in tensors:
        decl = by_name[tensor.name]
        if tensor.datatype != DATATYPES[decl.dtype]:
            raise InputError(f"input '{tensor.name}' has datatype {tensor.datatype[:16]}", f"pass {DATATYPES[decl.dtype]}")
        check_shape(tensor.shape, decl, ranges, dims)
        count = math.prod(tensor.shape)
        if tensor.binary_size is not None:
            need = count * np.dtype(decl.dtype).itemsize
            if tensor.binary_size != need:
                raise InputError(f"input '{tensor.name}' says binary_data_size {tensor.binary_size}, its shape {list(tensor.shape)} needs {need} bytes",
                                 "send the tensor's bytes: little-endian, row-major, no padding")
            expected_binary += need
        else:
            _check_data(tensor, count)
    if expected_binary != binary_bytes:
        raise InputError(f"the body carries {binary_bytes} bytes of binary tensors, the inputs declare {expected_binary}",
                         "set Inference-Header-Content-Length to the JSON header's length, and binary_data_size on each binary input")


def _check_data(tensor: TensorIn, count: int) -> None:
    data = tensor.data
    if not isinstance(data, list):
        raise InputError(f"input '{tensor.name}': 'data' must be a list", "send the values flat (row-major) or nested as the shape")
    nested = nested_shape(data)
    if nested not in ((count,), tensor.shape) and not (count == 0 and data == []):
        raise InputError(f"input '{tensor.name}' holds data of shape {list(nested)}, its shape says {list(tensor.shape)} ({count} values)",
                         "send prod(shape) values, flat or nested as the shape")


def decode(tensors: Sequence[TensorIn], decls: Sequence[TensorDecl], binary: memoryview) -> dict[str, np.ndarray]:
    """Arrays of the declared dtypes; `check` must have passed these tensors against `decls` (names, shapes, sizes are not checked again)."""
    by_name = {d.name: d for d in decls}
    arrays, offset = {}, 0
    for tensor in tensors:
        decl = by_name[tensor.name]
        if tensor.binary_size is not None:
            chunk = binary[offset: offset + tensor.binary_size]
            offset += tensor.binary_size
            arrays[tensor.name] = _from_bytes(chunk, decl, tensor.shape)
        else:
            data = tensor.data  # flat, or nested as the shape (check): nested when its first item is a list
            values = _flatten(data, len(tensor.shape)) if data and isinstance(data[0], list) else data
            arrays[tensor.name] = json_values(values, decl).reshape(tensor.shape)
    return arrays


def _from_bytes(chunk: memoryview, decl: TensorDecl, shape: tuple[int, ...]) -> np.ndarray:
    """The tensor's bytes as a copy (the body can be freed) with the declared dtype object itself.

    The little-endian dtype read off the wire is only equal to that object, and the zoo's checker
    proves only the object itself good on its fast path: an equal one is checked again, slowly.
    """
    wire = np.dtype(np.uint8) if decl.dtype == "bool" else np.dtype(decl.dtype).newbyteorder("<")
    array = np.frombuffer(chunk, dtype=wire)
    if decl.dtype == "bool" and array.size and array.max() > 1:
        raise InputError(f"input '{decl.name}' holds BOOL bytes other than 0 and 1", "send one byte per element, 0 or 1")
    return array.astype(np.dtype(decl.dtype)).reshape(shape)


def encode(outputs: Mapping[str, np.ndarray], wanted: Sequence[OutputWanted] | None, *, binary_default: bool) -> tuple[list[dict], list[bytes]]:
    """(OIP output tensors, the binary chunks that follow the JSON, in the same order)."""
    if wanted is None:
        wanted = [OutputWanted(name=name) for name in outputs]
    unknown = [w.name for w in wanted if w.name not in outputs]
    if unknown:
        raise InputError(f"unknown output {unknown}", f"this model gives {list(outputs)}")
    tensors, chunks = [], []
    for want in wanted:
        value = np.asarray(outputs[want.name])
        tensor = {"name": want.name, "datatype": DATATYPES.get(value.dtype.name, value.dtype.name.upper()), "shape": list(value.shape)}
        if want.binary if want.binary is not None else binary_default:
            data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            tensor["data"] = value.reshape(-1).tolist()
        tensors.append(tensor)
    return tensors, chunks


def _flatten(value: list, depth: int) -> list:
    """Nested lists of the declared rank as one flat list; ragged rows are refused."""
    rows = value
    for _ in range(depth - 1):
        width = len(rows[0]) if rows and isinstance(rows[0], list) else None
        if any(not isinstance(r, list) or len(r) != width for r in rows):
            raise InputError("an input has rows of different lengths", "pass equal-length lists, or the values flat")
        rows = [x for r in rows for x in r]
    return rows
