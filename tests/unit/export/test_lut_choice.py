"""Export's choice of onnxruntime's lookup-table 2-bit kernel: how it decides from times against fp32, and its record
(export/lut_choice.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from geofractal_edge.artifacts.manifest import LutChoice
from geofractal_edge.artifacts.schema import SchemaError
from geofractal_edge.export import lut_choice
from geofractal_edge.targets.profile import RuntimeSettings

FP32 = [5000.0, 45000.0]  # the same model at fp32, microseconds per call at batches 1 and 16


def test_the_kernel_is_not_kept_where_it_is_faster_at_batch_1_but_slower_than_float_at_16():
    # the wide TriX's int8 on the AVX-512 Xeon (fifteenth session): x0.68 / x1.09 with the kernel, x0.86 / x0.84 without
    choice = lut_choice.decide((1, 16), FP32, [3400.0, 49000.0], [4300.0, 37800.0])
    assert not choice.kept and "at worst x1.09 of fp32's time, without it x0.86" in choice.why and "above x0.92" in choice.why
    assert choice.batches == (1, 16) and choice.on_p50_us == (3400.0, 49000.0) and choice.fp32_p50_us == tuple(FP32)


def test_the_kernel_is_kept_where_its_worst_batch_is_clearly_better():
    # faster at both batches, its worst x0.80 against x0.95
    choice = lut_choice.decide((1, 16), FP32, [1600.0, 36000.0], [4750.0, 40000.0])
    assert choice.kept and "(x0.84, at most x0.92)" in choice.why


def test_within_the_margin_the_exact_kernel_holds():
    # worst x0.90 against x0.95: x0.947, above x0.92 (the kernel quantizes activations; noise must not buy it)
    assert not lut_choice.decide((1, 16), FP32, [4500.0, 40000.0], [4750.0, 42000.0]).kept


def test_a_kept_kernel_must_be_confirmed_by_a_second_timing(monkeypatch):
    timings = iter([([100.0], [50.0], [100.0]), ([100.0], [99.0], [100.0])])  # clearly faster, then not
    kernels = []

    def fake_timed(runs, at):
        kernels.append([settings.lut_gemm for _, settings in runs])
        return next(timings)

    monkeypatch.setattr(lut_choice, "timed", fake_timed)
    monkeypatch.setattr(lut_choice, "timed_batches", lambda bundle: (1,))
    staged = SimpleNamespace(manifest=SimpleNamespace(target=SimpleNamespace(runtime=RuntimeSettings())))
    choice = lut_choice.measured(staged, staged, staged)
    assert not choice.kept and "(x0.50, at most x0.92); not confirmed by a second timing" in choice.why and choice.on_p50_us == (99.0,)
    assert kernels == [[False, True, False]] * 2  # fp32 on the exact kernel, the bundle with it and without it


def test_unmeasured_records_say_who_decided():
    on, off = lut_choice.unmeasured("on"), lut_choice.unmeasured("off")
    assert on.kept and "--lut-gemm on" in on.why and on.batches == ()
    assert not off.kept and "turned off at export (--lut-gemm off)" in off.why


def test_a_record_with_times_for_other_batches_is_refused():
    with pytest.raises(SchemaError, match="on_p50_us"):
        LutChoice(kept=True, why="x", batches=(1, 16), fp32_p50_us=(1.0, 2.0), on_p50_us=(1.0,), off_p50_us=(1.0, 2.0))
