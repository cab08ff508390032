"""Check inputs against the manifest before they reach the graph: names, dtypes, shapes, bounds, values.

Shapes are checked against the declared dimension ranges (`graph.dim_ranges`) before any value is
looked at, so an oversized request costs nothing; `check_shape` is the same check for a shape read
from a header (an `.npz` entry, an HTTP tensor) before the array exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from geofractal_edge.artifacts.manifest import DimRange, TensorDecl
from geofractal_edge.errors import InputError


def check_inputs(feeds: Mapping[str, np.ndarray], specs: Sequence[TensorDecl], ranges: Mapping[str, DimRange]) -> None:
    """Raise InputError naming the first problem and how to fix it."""
    check_names(feeds, specs)
    dims: dict[str, tuple[int, str]] = {}
    for spec in specs:
        array = feeds[spec.name]
        _check_dtype(array, spec)
        check_shape(tuple(array.shape), spec, ranges, dims)
    for spec in specs:
        _check_values(feeds[spec.name], spec)


def check_names(feeds: Mapping[str, object], specs: Sequence[TensorDecl]) -> None:
    expected = [s.name for s in specs]
    unknown = sorted(set(feeds) - set(expected))
    if unknown:
        raise InputError(f"unknown input {unknown}", f"this model takes {expected}")
    missing = [name for name in expected if name not in feeds]
    if missing:
        raise InputError(f"missing input {missing}", f"this model takes {expected}")


def check_shape(shape: tuple[int, ...], spec: TensorDecl, ranges: Mapping[str, DimRange],
                dims: dict[str, tuple[int, str]] | None = None) -> None:
    """Rank, fixed sizes, each dynamic size within [min, max] of its range, and named dims agreeing."""
    dims = {} if dims is None else dims
    shown = "[" + ", ".join(map(str, spec.shape)) + "]"
    if len(shape) != len(spec.shape):
        raise InputError(f"input '{spec.name}' has shape {list(shape)}", f"pass shape {shown}")
    for axis, (size, dim) in enumerate(zip(shape, spec.shape)):
        if isinstance(dim, int):
            if size != dim:
                raise InputError(f"input '{spec.name}' has shape {list(shape)}", f"pass shape {shown}")
            continue
        bound = ranges.get(dim)
        low, high = (bound.min, bound.max) if bound else (1, None)
        if size < low or (high is not None and size > high):
            where = f"{low}..{high}" if high is not None else f">= {low}"
            raise InputError(f"input '{spec.name}' has {dim}={size} on axis {axis}, outside the declared {where}",
                             f"pass {dim} within {where} (split larger work into several calls)")
        if dim in dims and dims[dim][0] != size:
            other = dims[dim][1]
            raise InputError(f"input '{spec.name}' has {dim}={size} but '{other}' has {dim}={dims[dim][0]}", f"make '{dim}' agree")
        dims[dim] = (size, spec.name)


def _check_dtype(array: np.ndarray, spec: TensorDecl) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != np.dtype(spec.dtype):
        got = getattr(array, "dtype", type(array).__name__)
        raise InputError(f"input '{spec.name}' has dtype {got}", f"pass {spec.dtype}")


def _check_values(array: np.ndarray, spec: TensorDecl) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(f"input '{spec.name}' has {bad} NaN or infinite values", "pass finite numbers")
    if spec.range is not None and array.size:
        low, high = spec.range
        lo, hi = array.min(), array.max()
        if lo < low or hi > high:
            raise InputError(
                f"input '{spec.name}' has values in [{lo:.6g}, {hi:.6g}], outside [{low}, {high}]",
                f"pass values within [{low}, {high}]",
            )
