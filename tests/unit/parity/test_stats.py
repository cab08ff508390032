import math

import numpy as np

from geofractal_edge.parity.report import Check
from geofractal_edge.parity.stats import error_stats
from geofractal_edge.parity.tolerances import tolerances_for


def test_stats_in_float64():
    ref = np.array([1.0, -2.0, 3.0], dtype=np.float32)
    got = ref + np.array([0.1, 0.0, -0.1], dtype=np.float32)
    stats = error_stats(ref, got)
    assert math.isclose(stats["max_abs"], 0.1, rel_tol=1e-6)
    assert math.isclose(stats["sqnr_db"], 10 * math.log10(14 / 0.02), rel_tol=1e-5)
    assert error_stats(ref, ref)["sqnr_db"] == math.inf
    assert error_stats(ref, -ref)["cosine"] == -1.0


def test_nan_result_fails_checks():
    stats = error_stats(np.ones(3), np.array([1.0, np.nan, 1.0]))
    assert stats["nonfinite"] == 1
    assert not Check("sqnr_db", stats["sqnr_db"], 10.0, "min").passed


def test_tolerances_are_data_with_overrides():
    assert tolerances_for("int8")["task_delta_max"] == 0.5
    assert tolerances_for("int4", {"int4": {"task_delta_max": 1.0}})["task_delta_max"] == 1.0
    assert tolerances_for("fp32")["task_delta_max"] <= tolerances_for("int4")["task_delta_max"]
