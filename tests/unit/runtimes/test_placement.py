"""Placement reports: which provider ran the graph, measured from a real profiled run, and --strict."""

from __future__ import annotations

import inspect
import json

import onnxruntime as ort
import pytest

from geofractal_edge.backends.onnxruntime.placement import golden_feeds, kernels_by_provider, measure
from geofractal_edge.backends.placement import ENGINE, PlacementError, PlacementReport, check_strict
from geofractal_edge.runtimes import load
from tests.conftest import gfedge

TRT_EP, CUDA_EP, CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
GPU_ORDER = (TRT_EP, CUDA_EP, CPU_EP)
NO_TRT_EP = TRT_EP not in ort.get_available_providers()


def _report(**fields) -> PlacementReport:
    base = dict(target="jetson-agx-orin", requested=GPU_ORDER, available=GPU_ORDER, registered=GPU_ORDER)
    return PlacementReport(**{**base, **fields})


def test_measured_kernels_come_from_a_real_profiled_run(bundle_factory):
    session = load(bundle_factory("fp32"))
    kernels, kept = measure(session.bundle, [CPU_EP], golden_feeds(session.bundle))
    assert kept == (CPU_EP,)
    assert set(kernels) == {CPU_EP} and kernels[CPU_EP] > 5


def test_golden_feeds_at_a_batch_slice_or_tile_the_case_and_bind_its_key(bundle_factory):
    """One function makes a bundle's feeds for placement and for the benchmarks: as recorded, or at a batch."""
    import numpy as np

    bundle = load(bundle_factory("fp32")).bundle
    case = bundle.golden_cases()[0]
    x, rows = case.inputs["x"], len(case.inputs["x"])
    key = bundle.key(case.key).vector
    recorded, small, large = golden_feeds(bundle), golden_feeds(bundle, batch=3), golden_feeds(bundle, batch=rows + 2)
    for feeds in (recorded, small, large):
        np.testing.assert_array_equal(feeds["key"], key)
    np.testing.assert_array_equal(recorded["x"], x)
    np.testing.assert_array_equal(small["x"], x[:3])
    np.testing.assert_array_equal(large["x"], np.concatenate([x, x[:2]]))  # tiled past the case's rows
    names = [i.name for i in ort.InferenceSession(str(bundle.model_path), providers=[CPU_EP]).get_inputs()]
    assert sorted(names) == sorted(small)  # every input the graph takes


def test_kernels_by_provider_counts_each_node_once(tmp_path):
    events = [
        {"cat": "Session", "name": "model_run", "args": {}},
        {"cat": "Node", "name": "a_kernel_time", "args": {"provider": TRT_EP}},
        {"cat": "Node", "name": "a_kernel_time", "args": {"provider": TRT_EP}},  # a second run of the same node
        {"cat": "Node", "name": "b_fence_before", "args": {"provider": CPU_EP}},
        {"cat": "Node", "name": "shape_kernel_time", "args": {"provider": CPU_EP}},
    ]
    (tmp_path / "p.json").write_text(json.dumps(events))
    assert kernels_by_provider(tmp_path / "p.json") == {TRT_EP: 1, CPU_EP: 1}


def test_host_bundle_runs_where_its_target_intends(bundle_factory):
    report = load(bundle_factory("fp32")).placement
    assert report.clean and report.ran_on == CPU_EP
    assert "as the target host-cpu intends" in report.line()
    check_strict(report)  # no error


def test_packed_ternary_weights_are_handed_to_the_measuring_session(trix_bundle_factory):
    report = load(trix_bundle_factory("fp32")).placement  # TriX keeps its tile codes outside model.onnx
    assert report.clean and report.kernels[CPU_EP] > 0


@pytest.mark.skipif(not NO_TRT_EP, reason="this host's onnxruntime has the TensorRT provider")
def test_jetson_bundle_on_this_host_reports_the_fallback(bundle_factory):
    report = load(bundle_factory("int8", "jetson-orin-nano")).placement
    assert report.preferred == TRT_EP and report.ran_on == CPU_EP
    assert f"{TRT_EP} is not available on this host" in report.fallbacks
    assert report.to_dict()["fallbacks"] == report.fallbacks
    with pytest.raises(PlacementError) as err:
        check_strict(report)
    assert TRT_EP in err.value.problem and f"would run on {CPU_EP}" in err.value.problem
    assert "drop --strict" in err.value.fix


def test_partial_fallback_counts_kernels_per_provider():
    report = _report(kernels={TRT_EP: 10, CUDA_EP: 2, CPU_EP: 1})
    assert report.ran_on == TRT_EP
    assert report.fallbacks == [f"2 of 13 kernels ran on {CUDA_EP}", f"1 of 13 kernels ran on {CPU_EP}"]
    with pytest.raises(PlacementError, match=r"2 of 13 kernels ran on CUDAExecutionProvider \(and 1 more\)"):
        check_strict(report)


def test_provider_dropped_by_the_session_is_a_fallback():
    report = _report(registered=(CUDA_EP, CPU_EP))
    assert report.fallbacks == [f"{TRT_EP} was requested but the session did not keep it"]
    assert report.ran_on == CUDA_EP


def test_dla_layers_that_fell_back_to_the_gpu_fail_strict():
    dla = {"core": 0, "layers": 12, "dla_layers": 9, "gpu_fallback_layers": ["MatMul_1", "Softmax_2", "Gather_3", "Add_4"]}
    report = _report(requested=(ENGINE,), available=(ENGINE,), registered=(ENGINE,), kernels={ENGINE: 12}, dla=dla)
    assert report.fallbacks == ["4 of 12 layers fell back from DLA to the GPU (MatMul_1, Softmax_2, Gather_3, ...)"]
    with pytest.raises(PlacementError, match="fell back from DLA"):
        check_strict(report)


def test_engine_placement_without_dla_is_clean():
    report = _report(requested=(ENGINE,), available=(ENGINE,), registered=(ENGINE,), kernels={ENGINE: 7})
    assert report.clean and report.line() == "placement: TensorRT engine ran 7/7 kernels; as the target jetson-agx-orin intends"


def _run_has_strict() -> bool:
    from geofractal_edge.cli import run

    return "strict" in inspect.signature(run.run).parameters


@pytest.mark.skipif(not NO_TRT_EP, reason="this host's onnxruntime has the TensorRT provider")
def test_gfedge_run_strict_exits_1_naming_the_provider(bundle_factory, tmp_path):
    if not _run_has_strict():
        pytest.skip("`--strict` is not wired into geofractal_edge/cli/run.py yet")
    (tmp_path / "in.json").write_text(json.dumps({"x": [0.0, 0.5, 1.0]}))
    result = gfedge("run", bundle_factory("int8", "jetson-orin-nano"), "--input", tmp_path / "in.json", "--strict")
    assert result.returncode == 1, result.stderr
    assert TRT_EP in result.stderr and CPU_EP in result.stderr
    ok = gfedge("run", bundle_factory("fp32"), "--input", tmp_path / "in.json", "--strict")
    assert ok.returncode == 0, ok.stderr
