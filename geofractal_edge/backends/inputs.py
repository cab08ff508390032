"""Check inputs against the manifest before they reach the graph: names, dtypes, shapes, bounds, values.

Shapes are checked against the declared dimension ranges (`graph.dim_ranges`) before any value is
looked at, so an oversized request costs nothing; `check_shape` is the same check for a shape read
from a header (an `.npz` entry, an HTTP tensor) before the array exists.

`InputChecker` is `check_inputs` prepared once per graph for the per-call path of a runner: it
proves good inputs good with little work (one key-set comparison, a dtype and shape test per
input, the value checks in C-level passes) and hands anything it cannot prove good to
`check_inputs`, which finds and names the problem. So the checks and their messages are the same,
and they stay on for every call.

`InputChecker.checked` returns the feeds it passed as `Checked`: read-only, naming the checker. A
runner whose own checker has the same declarations (`InputChecker.proved`) runs them without
checking again, so feeds checked early (the zoo checks a request before it loads the model) are
checked once, not once more per layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from geofractal_edge.artifacts.manifest import DimRange, TensorDecl
from geofractal_edge.errors import InputError


def leading_dim(graph) -> tuple[str | None, int, int, int]:
    """(name, min, opt, max) of the first data input's leading dynamic dimension, the batch `gfedge bench` counts;
    a fixed one is (None, n, n, n)."""
    first = graph.data_inputs[0]
    dim = first.shape[0] if first.shape else 1
    if isinstance(dim, int):
        return None, dim, dim, dim
    bound = graph.dim_ranges[dim]
    return dim, bound.min, bound.opt, bound.max


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


# Up to this many elements a Python list pass (tolist, then sum/min/max in C) beats two numpy
# reductions. Measured between onnxruntime runs, as a runner calls it, not in a hot loop: right
# after a run, numpy's reduction machinery is cold and one reduction costs ~12 us on the 2-core
# host (numpy 2.4), about what a list pass over 256 floats costs there.
_SMALL = 128


class InputChecker:
    """`check_inputs(feeds, specs, ranges)`, prepared once: call it with the feeds of each run."""

    def __init__(self, specs: Sequence[TensorDecl], ranges: Mapping[str, DimRange]) -> None:
        self.specs, self.ranges = tuple(specs), dict(ranges)
        self.names = frozenset(s.name for s in self.specs)
        self._count = len(self.names)
        self._checks = tuple((spec.name, _input_check(spec, self.ranges)) for spec in self.specs)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Return when the inputs are good; otherwise raise InputError naming the first problem."""
        if len(feeds) == self._count:  # with every declared name found below: the same names
            dims: dict[str, int] = {}  # named dimension -> size, agreeing across inputs
            for name, good in self._checks:
                if not good(feeds.get(name), dims):
                    break
            else:
                return
        check_inputs(feeds, self.specs, self.ranges)  # names the problem (or finds none: the fast path is cautious)

    def checked(self, feeds: Mapping[str, np.ndarray]) -> Checked:
        """`feeds` copied, the copy checked (InputError naming the first problem) and kept as `Checked`, the proof a runner accepts."""
        proof = Checked(feeds, self, _ISSUED)  # the copy is what is checked: a mapping that changes between reads proves nothing
        self(proof._feeds)
        return proof

    def proved(self, feeds: Mapping[str, np.ndarray]) -> bool:
        """True when `feeds` are `Checked` by a checker of these same declarations: checking them again would find nothing."""
        if not isinstance(feeds, Checked) or feeds._issued is not _ISSUED:
            return False
        other = feeds.checker
        return other is self or other.holds(self.specs, self.ranges)

    def holds(self, specs: Sequence[TensorDecl], ranges: Mapping[str, DimRange]) -> bool:
        """True when this checker checks exactly these declarations (inputs and dimension ranges)."""
        return self.specs == tuple(specs) and self.ranges == dict(ranges)


_ISSUED = object()  # what only InputChecker.checked passes: a Checked built by hand proves nothing


class Checked(Mapping):
    """Feeds an InputChecker passed (a read-only copy of the mapping) and that checker.

    Made by `InputChecker.checked`; one built any other way is not accepted as proof. The arrays are
    the caller's: changing one in place after the check is the caller's bug, as it would be between
    any check and the run.
    """

    __slots__ = ("_feeds", "_checker", "_issued")

    def __init__(self, feeds: Mapping[str, np.ndarray], checker: InputChecker, issued: object = None) -> None:
        self._feeds, self._checker, self._issued = dict(feeds), checker, issued

    @property
    def checker(self) -> InputChecker:
        return self._checker

    def __getitem__(self, name: str) -> np.ndarray:
        return self._feeds[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def keys(self):
        return self._feeds.keys()  # dict(checked) copies through the dict's keys, not Mapping's Python-level view


def _input_check(spec: TensorDecl, ranges: Mapping[str, DimRange]) -> Callable[[object, dict[str, int]], bool]:
    """good(array, dims): True when check_inputs would pass this input (dtype, shape, values).

    One closure per input, the values check of one element inline: batch 1 pays for one call.
    """
    dtype, rank = np.dtype(spec.dtype), len(spec.shape)
    fixed = tuple(spec.shape) if all(isinstance(d, int) for d in spec.shape) else None
    fixed_axes = tuple((axis, d) for axis, d in enumerate(spec.shape) if isinstance(d, int))
    named = tuple((axis, d, *_bounds(ranges.get(d))) for axis, d in enumerate(spec.shape) if not isinstance(d, int))
    values_ok = _values_check(spec)
    low, high = spec.range if spec.range is not None else (-math.inf, math.inf)
    ndarray = np.ndarray

    def good(array: object, dims: dict[str, int]) -> bool:
        if not isinstance(array, ndarray) or array.dtype is not dtype:  # an equal dtype that is another object: checked slowly
            return False
        shape = array.shape
        if fixed is not None:
            if shape != fixed:
                return False
        else:
            if len(shape) != rank:
                return False
            for axis, size in fixed_axes:
                if shape[axis] != size:
                    return False
            for axis, dim, least, most in named:
                size = shape[axis]
                if not least <= size <= most or dims.setdefault(dim, size) != size:
                    return False
        if values_ok is None:
            return True
        size = array.size
        if size == 1:  # batch 1 of a scalar input, the call whose overhead shows most
            value = array.item()
            return low <= value <= high and value - value == 0  # NaN fails both, an infinity the second
        return size == 0 or values_ok(array, size)

    return good


def _bounds(bound: DimRange | None) -> tuple[int, float]:
    return (bound.min, bound.max) if bound else (1, math.inf)


def _values_check(spec: TensorDecl) -> Callable[[np.ndarray, int], bool] | None:
    """ok(array, size) for an array of 2 or more elements: every value finite (floats) and within the range.

    A range from 0 (token ids, masks, Atlas coordinates) takes one pass: read as unsigned integers of the
    same width, a negative number, NaN or an infinity is larger than the bit pattern of the range's
    top, and non-negative floats order like their bit patterns. Other ranges prove floats finite
    on their own: NaN or an infinity makes Python's sum of the values NaN or infinite, or numpy's
    minimum or maximum NaN or infinite (NaN propagates through both). Comparisons with NaN are
    False, so nothing unproven passes; a false alarm (-0.0 read as unsigned) only sends the inputs
    to check_inputs, which is exact. None: nothing to check.
    """
    dtype = np.dtype(spec.dtype)
    floating = dtype.kind == "f"
    if not floating and spec.range is None:
        return None
    low, high = spec.range if spec.range is not None else (-math.inf, math.inf)
    flat = len(spec.shape) == 1
    lowest, highest = np.minimum.reduce, np.maximum.reduce
    unsigned = _unsigned_top(dtype, low, high)
    if unsigned is not None:
        as_unsigned, top = unsigned

        def from_zero(array: np.ndarray, size: int) -> bool:
            view = array.view(as_unsigned)
            if size <= _SMALL:
                return max(view.tolist() if flat else view.ravel().tolist()) <= top
            return highest(view, axis=None) <= top

        return from_zero

    def ok(array: np.ndarray, size: int) -> bool:
        if size <= _SMALL:
            values = array.tolist() if flat else array.ravel().tolist()
            if floating:
                total = sum(values)
                if total - total != 0.0:  # NaN or infinite somewhere
                    return False
            return low <= min(values) and max(values) <= high
        lo, hi = lowest(array, axis=None), highest(array, axis=None)
        if floating and not (math.isfinite(lo) and math.isfinite(hi)):
            return False
        return low <= lo and hi <= high

    return ok


def _unsigned_top(dtype: np.dtype, low: float, high: float) -> tuple[np.dtype, int] | None:
    """(the unsigned dtype of the same width, the largest passing value read as it) for a range [0, high]; else None.

    The top is `high` in the input's own dtype, rounded as check_inputs' comparison rounds it
    (numpy compares a float32 array with a Python float in float32).
    """
    if low != 0 or dtype.kind not in "fiu" or not math.isfinite(high):
        return None
    unsigned = np.dtype(f"u{dtype.itemsize}")
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            top = dtype.type(high)
        if not np.isfinite(top):
            return None
        return unsigned, int(np.array(top, dtype=dtype).view(unsigned))
    return unsigned, min(math.floor(high), int(np.iinfo(dtype).max))
