"""benchmarks/runner_overhead.py: every way it times computes the same outputs on the same session."""

from __future__ import annotations

import sys

import numpy as np

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from runner_overhead import ways  # noqa: E402


def test_the_ways_timed_compute_the_same_outputs(bundle_factory):
    fns = ways(bundle_factory("fp32"), threads=1)
    assert set(fns) == {"keyed", "bound", "C run", "bare", "run+check"}
    keyed, bound = fns["keyed"](), fns["bound"]()
    bare, c_run = fns["bare"](), fns["C run"]()
    assert np.array_equal(next(iter(keyed.values())), next(iter(bound.values())))
    assert np.array_equal(next(iter(keyed.values())), bare[0]) and np.array_equal(bare[0], c_run[0])
    assert fns["run+check"]() is None  # the check passes the golden feeds (it raises on bad ones)
