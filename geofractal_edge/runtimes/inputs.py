"""Check inputs against the manifest before they reach the graph: names, dtypes, shapes, values."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from geofractal_edge.errors import InputError


def check_inputs(feeds: Mapping[str, np.ndarray], specs: list[dict]) -> None:
    """Raise InputError naming the first problem and how to fix it."""
    expected = [s["name"] for s in specs]
    unknown = sorted(set(feeds) - set(expected))
    if unknown:
        raise InputError(f"unknown input {unknown}", f"this model takes {expected}")
    missing = [name for name in expected if name not in feeds]
    if missing:
        raise InputError(f"missing input {missing}", f"this model takes {expected}")
    dims: dict[str, tuple[int, str]] = {}
    for spec in specs:
        array = feeds[spec["name"]]
        _check_dtype(array, spec)
        _check_shape(array, spec, dims)
        _check_values(array, spec)


def _check_dtype(array: np.ndarray, spec: dict) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != np.dtype(spec["dtype"]):
        got = getattr(array, "dtype", type(array).__name__)
        raise InputError(f"input '{spec['name']}' has dtype {got}", f"pass {spec['dtype']}")


def _check_shape(array: np.ndarray, spec: dict, dims: dict[str, tuple[int, str]]) -> None:
    want = spec["shape"]
    shown = "[" + ", ".join(map(str, want)) + "]"
    if array.ndim != len(want):
        raise InputError(f"input '{spec['name']}' has shape {list(array.shape)}", f"pass shape {shown}")
    for axis, (size, dim) in enumerate(zip(array.shape, want)):
        if isinstance(dim, int):
            if size != dim:
                raise InputError(f"input '{spec['name']}' has shape {list(array.shape)}", f"pass shape {shown}")
        elif size < 1:
            raise InputError(f"input '{spec['name']}' is empty on axis {axis}", f"pass at least one element along '{dim}'")
        elif dim in dims and dims[dim][0] != size:
            other = dims[dim][1]
            raise InputError(f"input '{spec['name']}' has {dim}={size} but '{other}' has {dim}={dims[dim][0]}", f"make '{dim}' agree")
        else:
            dims[dim] = (size, spec["name"])


def _check_values(array: np.ndarray, spec: dict) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(f"input '{spec['name']}' has {bad} NaN or infinite values", "pass finite numbers")
    bounds = spec.get("range")
    if bounds is not None and array.size:
        low, high = bounds
        if array.min() < low or array.max() > high:
            raise InputError(
                f"input '{spec['name']}' has values in [{array.min():.6g}, {array.max():.6g}], outside [{low}, {high}]",
                f"pass values within [{low}, {high}]",
            )
