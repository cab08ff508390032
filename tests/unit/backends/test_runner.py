"""The runner contract, on a real onnxruntime session: run, placement, cache_key, close, `with`."""

from __future__ import annotations

import numpy as np
import pytest

from geofractal_edge.backends import Runner
from geofractal_edge.backends.onnxruntime import load
from geofractal_edge.errors import GfedgeError


def test_onnxruntime_runner_keeps_the_contract(bundle_factory):
    x = {"x": np.linspace(0, 1, 5, dtype=np.float32)}
    with load(bundle_factory("fp32")) as runner:
        assert isinstance(runner, Runner)
        key = runner.keys.names()[0]
        assert runner.run(x, key=key)["logits"].shape[0] == 5 and runner.active_key == key
        assert runner.placement is runner.placement and runner.placement.clean  # measured once
        assert runner.cache_key is None  # host-cpu: no TensorRT provider, no engine cache
    with pytest.raises(GfedgeError, match="closed"):
        runner.run(x)


def test_a_backend_must_say_where_it_runs():
    class NoPlacement(Runner):
        def _execute(self, feeds):
            return feeds

    with pytest.raises(TypeError, match="placement"):
        NoPlacement(None)


def test_naming_the_bound_key_again_looks_nothing_up_and_another_key_still_switches(bundle_factory):
    x = {"x": np.linspace(0, 1, 5, dtype=np.float32)}
    with load(bundle_factory("fp32")) as runner:
        first, second = runner.keys.names()[:2]
        a = runner.run(x, key=first)["logits"]
        lookups = runner.keys.hits + runner.keys.misses
        assert np.array_equal(runner.run(x, key=first)["logits"], a)  # a server's every request names its key
        assert runner.keys.hits + runner.keys.misses == lookups
        b = runner.run(x, key=second)["logits"]
        assert runner.active_key == second and not np.array_equal(a, b)
        assert np.array_equal(runner.run(x, key=runner.keys.get(first))["logits"], a)  # a Key object binds itself
        assert runner.active_key == first
