"""Read inputs and write outputs for `gfedge run` and the zoo: .safetensors, .npz (no pickle) or JSON.

Every reader checks names, dtypes and shapes against the manifest from the file's header (the
safetensors header, each `.npy` header inside the `.npz`, the nesting of JSON lists) before any
array is built, so a small file that would inflate past the declared bounds costs nothing.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from geofractal_edge.artifacts import atomic
from geofractal_edge.artifacts.manifest import DimRange, TensorDecl
from geofractal_edge.backends.inputs import check_names, check_shape
from geofractal_edge.errors import InputError

FORMATS = (".safetensors", ".npz", ".json")
MAX_FILE_BYTES = 1 << 30  # an input file larger than this is refused before it is read
_ST_DTYPES = {"F32": "float32", "F16": "float16", "F64": "float64", "I64": "int64", "I32": "int32", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
_INT_LIMITS = {"int64": (-(1 << 63), (1 << 63) - 1), "int32": (-(1 << 31), (1 << 31) - 1), "int8": (-128, 127), "uint8": (0, 255)}


def read_inputs(path: Path, specs: Sequence[TensorDecl], ranges: Mapping[str, DimRange]) -> dict[str, np.ndarray]:
    """Arrays by name, each checked against its declaration before it is built."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file {path} does not exist", "check the --input path")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(f"input file {path} is {size:,} bytes, over the {MAX_FILE_BYTES:,} limit", "pass fewer rows per call")
    suffix = path.suffix.lower()
    readers = {".safetensors": _read_safetensors, ".npz": _read_npz, ".json": _read_json}
    if suffix not in readers:
        raise InputError(f"input file {path} has an unknown format '{suffix}'", f"use one of {', '.join(FORMATS)}")
    try:
        return readers[suffix](path, specs, ranges)
    except InputError:
        raise
    except (SafetensorError, ValueError, OSError, zipfile.BadZipFile, RecursionError, struct.error, EOFError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read {path} ({reason})", f"write it as one of {', '.join(FORMATS)}") from None


def tensors_from_json(data: object, specs: Sequence[TensorDecl], ranges: Mapping[str, DimRange]) -> dict[str, np.ndarray]:
    """A JSON object of input name -> nested lists, as arrays of the declared dtypes (shape checked first)."""
    if not isinstance(data, dict):
        raise InputError("JSON input must be an object of input name -> list", 'e.g. {"x": [0.0, 0.5, 1.0]}')
    by_name = {s.name: s for s in specs}
    check_names(data, specs)
    dims: dict = {}
    for name, value in data.items():
        check_shape(nested_shape(value), by_name[name], ranges, dims)
    return {name: _json_array(value, by_name[name]) for name, value in data.items()}


def _read_safetensors(path: Path, specs: Sequence[TensorDecl], ranges: Mapping[str, DimRange]) -> dict[str, np.ndarray]:
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > min(path.stat().st_size, 100 << 20):
            raise ValueError("the safetensors header is longer than the file")
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    _check_headers({name: (_ST_DTYPES.get(meta.get("dtype"), meta.get("dtype")), tuple(meta.get("shape", ()))) for name, meta in header.items()}, specs, ranges)
    return dict(load(path.read_bytes()))


def _read_npz(path: Path, specs: Sequence[TensorDecl], ranges: Mapping[str, DimRange]) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        headers = {}
        for name, info in members.items():
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _fortran, dtype = read_header(member, max_header_size=10_000)
                if dtype.hasobject:
                    raise InputError(f"input '{name}' in {path.name} holds Python objects", "save plain numeric arrays (np.savez)")
                if info.file_size > member.tell() + int(np.prod(shape)) * dtype.itemsize:
                    raise InputError(f"input '{name}' in {path.name} is larger than its header says", "re-save the file with np.savez")
                headers[name] = (dtype.name, tuple(shape))
        _check_headers(headers, specs, ranges)
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


def _read_json(path: Path, specs: Sequence[TensorDecl], ranges: Mapping[str, DimRange]) -> dict[str, np.ndarray]:
    return tensors_from_json(json.loads(path.read_text(encoding="utf-8")), specs, ranges)


def _check_headers(headers: dict[str, tuple[str, tuple[int, ...]]], specs: Sequence[TensorDecl], ranges: Mapping[str, DimRange]) -> None:
    check_names(headers, specs)
    dims: dict = {}
    for spec in specs:
        dtype, shape = headers[spec.name]
        if dtype != spec.dtype:
            raise InputError(f"input '{spec.name}' has dtype {dtype}", f"pass {spec.dtype}")
        check_shape(shape, spec, ranges, dims)


def nested_shape(value: object) -> tuple[int, ...]:
    """The shape of nested equal-length lists, read without building anything."""
    shape = []
    level = value
    while isinstance(level, list):
        shape.append(len(level))
        if not level:
            break
        level = level[0]
    return tuple(shape)


def _json_array(value: object, spec: TensorDecl) -> np.ndarray:
    flat: list = []
    _flatten(value, len(spec.shape), flat, spec.name)
    return json_values(flat, spec).reshape(nested_shape(value))


def json_values(flat: list, spec: TensorDecl) -> np.ndarray:
    """A flat list of JSON values as a 1-D array of the declared dtype; InputError naming the first bad value.

    Only the values are looked at (numbers, whole numbers for an integer input, finite, within the
    dtype): the caller has checked names and shape, so the serving layer builds each HTTP tensor
    with this, in one pass, after checking its declared shape.
    """
    kind = np.dtype(spec.dtype).kind
    for item in flat:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise InputError(f"input '{spec.name}' holds {type(item).__name__} {str(item)[:20]!r}", f"pass numbers ({spec.dtype})")
        if kind in "iu" and not isinstance(item, int):
            raise InputError(f"input '{spec.name}' holds {item!r}, not an integer", f"pass whole numbers ({spec.dtype}); nothing is rounded for you")
        if kind == "f" and not math.isfinite(item):
            raise InputError(f"input '{spec.name}' has NaN or infinite values", "pass finite numbers")
    if kind in "iu" and flat:
        low, high = _INT_LIMITS.get(spec.dtype, (-(1 << 63), (1 << 63) - 1))
        if min(flat) < low or max(flat) > high:
            raise InputError(f"input '{spec.name}' holds an integer outside {spec.dtype}", f"pass values within [{low}, {high}]")
    return np.asarray(flat, dtype=spec.dtype)


def _flatten(value: object, depth: int, out: list, name: str) -> None:
    if depth == 0:
        out.append(value)
        return
    if not isinstance(value, list):
        raise InputError(f"input '{name}' is not a nested list of the declared rank", "pass equal-length lists")
    first = len(value[0]) if value and isinstance(value[0], list) else None
    for item in value:
        if depth > 1 and (not isinstance(item, list) or len(item) != first):
            raise InputError(f"input '{name}' has rows of different lengths", "pass equal-length lists")
        _flatten(item, depth - 1, out, name)


def write_outputs(path: Path, outputs: dict[str, np.ndarray]) -> None:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        data = save({k: np.ascontiguousarray(v) for k, v in outputs.items()})
    elif suffix == ".npz":
        buffer = io.BytesIO()
        np.savez(buffer, **outputs)
        data = buffer.getvalue()
    elif suffix == ".json":
        data = json.dumps({k: v.tolist() for k, v in outputs.items()}).encode()
    else:
        raise InputError(f"output file {path} has an unknown format '{suffix}'", f"use one of {', '.join(FORMATS)}")
    atomic.write_bytes(path, data)
