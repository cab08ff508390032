"""gfedge bench and the library under it: bundles side by side, each in a worker of its own; session settings per call."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.backends.bench import Subject, _result, bench, measure, prepare
from geofractal_edge.backends.onnxruntime.placement import batch_feeds
from geofractal_edge.backends.inputs import leading_dim
from geofractal_edge.backends.initializers import graph_weight_bytes
from geofractal_edge.errors import GfedgeError
from geofractal_edge.runtimes import load
from geofractal_edge.targets.profile import RuntimeSettings, TargetProfile
from tests.conftest import ROOT, gfedge


def test_gfedge_bench_json_has_both_bundles_with_ratios_to_the_first(bundle_factory):
    first, second = bundle_factory("fp32"), bundle_factory("int8")
    result = gfedge("bench", first, second, "--json", "--runs", "5", env={"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    subjects = report["subjects"]
    assert [s["precision"] for s in subjects] == ["fp32", "int8"]
    dim_range = open_bundle(first).manifest.graph.dim_ranges["n"]
    for s in subjects:
        assert [b["batch"] for b in s["batches"]] == sorted({dim_range.min, dim_range.opt})  # the declared min and opt
        assert s["rss_load_bytes"] > 0 and s["rss_warm_bytes"] > 0 and s["weight_bytes"] > 0 and s["load_seconds"] > 0
        assert s["rss_peak_bytes"] >= s["rss_warm_bytes"]  # the calls' high-water mark is at least what they leave
        assert 0 < s["anon_warm_bytes"] <= s["rss_warm_bytes"] + (1 << 20)  # the private part (page noise aside)
        # Loaded again in the same worker: the model's own cost, without onnxruntime's code pages and process-wide state that
        # the first session faulted in (~10 MiB file-backed and ~4 MiB private here; these bundles hold a few KiB of weights).
        # With glibc's huge-page malloc (asked for in this run, as the gfedge command does) RSS moves in 2 MiB pages, so a model of
        # a few KiB can read up to one such page either side of its cost (-1.7 MiB once, in a full `make test`).
        huge = 2 << 20
        assert -huge < s["model_warm_bytes"] < s["model_load_bytes"] + huge and s["reload_seconds"] > 0
        # > 4 MiB: a floor well under what onnxruntime 1.32 on x86-64 Linux reads (~14 MiB); another build may differ.
        assert s["runtime_once_bytes"] == s["rss_warm_bytes"] - s["model_warm_bytes"] > 4 << 20
        for b in s["batches"]:
            assert b["runs"] == 5 and b["p99_us"] >= b["p50_us"] > 0 and b["items_per_s"] > 0 and b["bare_p50_us"] > 0
    assert subjects[0]["ratios_to_first"]["weight_bytes"] == 1.0
    assert subjects[1]["ratios_to_first"]["weight_bytes"] == pytest.approx(subjects[1]["weight_bytes"] / subjects[0]["weight_bytes"])
    assert subjects[1]["ratios_to_first"][f"p50@{dim_range.min}"] > 0
    assert subjects[1]["ratios_to_first"]["model_warm_bytes"] == pytest.approx(subjects[1]["model_warm_bytes"] / subjects[0]["model_warm_bytes"])
    assert len(report["machine"]["load_average_start"]) == 3 and report["machine"]["cores"] >= 1
    assert report["machine"]["malloc_hugepages"] is True  # recorded: the workers inherit the command's GLIBC_TUNABLES


def test_gfedge_bench_refuses_a_bad_bundle_path_in_one_line(tmp_path):
    result = gfedge("bench", tmp_path / "missing")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "missing" in result.stderr and "Traceback" not in result.stderr


def test_gfedge_bench_plot_draws_the_comparison_beside_the_table(bundle_factory, tmp_path):
    result = gfedge("bench", bundle_factory("fp32"), bundle_factory("int8"), "--runs", "2", "--batch", "1", "--plot", tmp_path / "bench.png")
    assert result.returncode == 0, result.stderr
    assert "p50 us" in result.stdout and f"wrote {tmp_path / 'bench.png'}" in result.stdout.replace("\n", "")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bad_picture_name_is_refused_before_any_worker_starts(bundle_factory, tmp_path):
    result = gfedge("bench", bundle_factory("fp32"), "--plot", tmp_path / "bench.jpg")
    assert result.returncode == 2 and "neither .png nor .svg" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr and "timed runs" not in result.stderr


def test_a_batch_outside_the_declared_range_is_refused_before_any_worker(bundle_factory):
    with pytest.raises(GfedgeError, match=r"batch 0 is outside .* range 1\.\."):
        bench([bundle_factory("fp32")], batches=[0], runs=1)


def test_measure_returns_one_bundles_numbers_for_cost_estimates(bundle_factory):
    result = measure(bundle_factory("int8"), batches=[1, 3], runs=3, warmup=1, threads=1)
    assert [t.batch for t in result.batches] == [1, 3] and result.settings["intra_op_threads"] == 1
    assert result.precision == "int8" and result.rss_warm_bytes > 0 and result.timing(3).p99_us >= result.timing(3).p50_us


def test_settings_per_subject_reach_the_worker(bundle_factory):
    report = bench([Subject(bundle_factory("fp32"), "prepacked"), Subject(bundle_factory("fp32"), "plain", {"prepacking": False, "cpu_mem_arena": False})],
                   batches=[1], runs=2, warmup=1)
    assert [s.settings["prepacking"] for s in report.subjects] == [True, False]
    assert report.subjects[1].settings["cpu_mem_arena"] is False and report.ratios()[1]["weight_bytes"] == 1.0


def test_golden_inputs_are_sliced_or_tiled_to_the_batch(bundle_factory):
    bundle = open_bundle(bundle_factory("fp32"))
    dim, low, _, _ = leading_dim(bundle.manifest.graph)
    golden = bundle.golden_cases()[0].inputs["x"]
    for batch in (1, golden.shape[0] + 3):
        feeds, _ = batch_feeds(bundle, batch)
        assert feeds["x"].shape == (batch,) and dim == "n" and low == 1
        assert np.array_equal(feeds["x"], np.resize(golden, batch))  # within the declared range: golden values, never random


def test_weight_bytes_match_onnx_s_own_count(bundle_factory, trix_bundle_factory):
    onnx = pytest.importorskip("onnx")
    for path in (bundle_factory("int4"), trix_bundle_factory("fp32")):
        model = onnx.load(str(path / "model.onnx"), load_external_data=False)
        bits = {1: 32, 2: 8, 3: 8, 6: 32, 7: 64, 9: 8, 10: 16, 21: 4, 22: 4}
        expected = sum(len(t.raw_data) if t.HasField("raw_data") and t.data_location != 1 else (int(np.prod(t.dims)) * bits[t.data_type] + 7) // 8
                       for t in model.graph.initializer)
        expected += sum(len(a.t.raw_data) for n in model.graph.node for a in n.attribute if a.HasField("t"))
        assert graph_weight_bytes(path / "model.onnx") == expected


def test_runtime_settings_per_call_and_per_target(bundle_factory):
    with load(bundle_factory("fp32"), intra_op_threads=1, allow_spinning=False, prepacking=False, cpu_mem_arena=False, mem_pattern=False,
              shared_arena=False) as session:
        assert session.settings == RuntimeSettings(intra_op_threads=1, allow_spinning=False, prepacking=False, cpu_mem_arena=False, mem_pattern=False,
                                                   shrink_above_batch=1)  # host-cpu's own
        options = session._session.get_session_options()
        assert options.intra_op_num_threads == 1 and not options.enable_cpu_mem_arena and not options.enable_mem_pattern
        assert options.get_session_config_entry("session.disable_prepacking") == "1"
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert session.run({"x": np.linspace(0, 1, 5, dtype=np.float32)})["logits"].shape[0] == 5
    with load(bundle_factory("fp32"), intra_op_threads=2, allow_spinning=True, stop_spinning_after_call=True, shared_arena=False) as spinning:
        options = spinning._session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"  # spin inside a call, not between calls
        assert spinning.run({"x": np.linspace(0, 1, 5, dtype=np.float32)})["logits"].shape[0] == 5
    with pytest.raises(GfedgeError, match="stop_spinning_after_call is 1"):
        RuntimeSettings(stop_spinning_after_call=1)
    with pytest.raises(GfedgeError, match=r"unknown fields \['spin'\]"):
        load(bundle_factory("fp32"), spin=True)
    base = TargetProfile.from_dict({**open_bundle(bundle_factory("fp32")).manifest.target.to_dict(), "runtime": {"intra_op_threads": 2}})
    assert base.runtime.intra_op_threads == 2 and base.runtime.prepacking is RuntimeSettings().prepacking
    with pytest.raises(GfedgeError, match="intra_op_threads is -1"):
        RuntimeSettings.from_dict({"intra_op_threads": -1})


def test_arena_shrinkage_is_a_run_option_of_every_call_and_changes_no_output(bundle_factory):
    x = {"x": np.linspace(0, 1, 64, dtype=np.float32)}
    with load(bundle_factory("fp32"), shared_arena=False) as plain, load(bundle_factory("fp32"), shared_arena=False, arena_shrinkage=True) as shrinking:
        assert plain.run_options is None
        assert shrinking.run_options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
        np.testing.assert_array_equal(shrinking.run(x)["logits"], plain.run(x)["logits"])
    with load(bundle_factory("fp32"), arena_shrinkage=True, cpu_mem_arena=False) as no_arena:
        assert no_arena.run_options is None  # nothing to shrink
    for bad in (-1, (32 << 10) + 1, True):
        with pytest.raises(GfedgeError, match="mmap_threshold_kib"):
            RuntimeSettings(mmap_threshold_kib=bad)


def test_shrink_above_batch_hands_back_only_after_the_larger_calls(bundle_factory, monkeypatch):
    from geofractal_edge.backends.onnxruntime import runner

    trims = []
    monkeypatch.setattr(runner, "trim_heap", lambda: trims.append(True))
    small, large = {"x": np.linspace(0, 1, 2, dtype=np.float32)}, {"x": np.linspace(0, 1, 64, dtype=np.float32)}
    with load(bundle_factory("fp32"), shared_arena=False, shrink_above_batch=0) as plain, \
            load(bundle_factory("fp32"), shared_arena=False, shrink_above_batch=2) as some:
        assert some.run_options is None and some.options_for(small) is None  # batch 2: kept in the arena
        assert some.options_for(large).get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
        for feeds, trimmed in ((small, 0), (large, 1), (small, 1)):
            np.testing.assert_array_equal(some.run(feeds)["logits"], plain.run(feeds)["logits"])
            assert len(trims) == trimmed  # glibc's free pages handed back after the large call only
            keyed = {**feeds, some.manifest.graph.key_input.name: some.bound_key.vector}  # what the runner binds
            np.testing.assert_array_equal(some.bare_runner()(keyed)[0], plain.run(feeds)["logits"])
    with load(bundle_factory("fp32"), shared_arena=False, shrink_above_batch=0) as plain, \
            load(bundle_factory("fp32"), shared_arena=True, shrink_above_batch=2) as shared:  # host-cpu's pairing: the process arena
        assert shared.options_for(large).get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
        for feeds in (large, small, large):
            np.testing.assert_array_equal(shared.run(feeds)["logits"], plain.run(feeds)["logits"])
    with load(bundle_factory("fp32"), shrink_above_batch=2, arena_shrinkage=True) as session:  # every call shrinks already
        assert session.options_for(large) is session.run_options
        before = len(trims)
        session.run(large)
        assert len(trims) == before
    with load(bundle_factory("fp32"), shrink_above_batch=2, cpu_mem_arena=False) as session:  # no arena to shrink: glibc's pages only
        assert session.options_for(large) is None
        before = len(trims)
        session.run(small)
        assert len(trims) == before
        session.run(large)
        assert len(trims) == before + 1
    for bad in (-1, True, 1.5):
        with pytest.raises(GfedgeError, match="shrink_above_batch"):
            RuntimeSettings(shrink_above_batch=bad)


def test_gfedge_bench_set_passes_runtime_settings_to_every_bundle(bundle_factory):
    result = gfedge("bench", bundle_factory("fp32"), "--json", "--runs", "2", "--batch", "1", "--set", "arena_shrinkage=true", "-s", "mmap_threshold_kib=256")
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)["subjects"][0]["settings"]
    assert settings["arena_shrinkage"] is True and settings["mmap_threshold_kib"] == 256
    for bad, words in (("spin=true", "unknown fields"), ("arena_shrinkage", "NAME=VALUE"), ("prepacking=maybe", "neither true"),
                       ("mmap_threshold_kib=\u00b2", "neither true"), ("intra_op_threads=1", "both --threads")):
        refused = gfedge("bench", bundle_factory("fp32"), "--set", bad, "--threads", "1")
        assert refused.returncode == 2 and words in refused.stderr and "Traceback" not in refused.stderr


def _uses_env_allocators(session) -> bool:
    options = session._session.get_session_options()
    try:
        return options.get_session_config_entry("session.use_env_allocators") == "1"
    except RuntimeError:  # onnxruntime: no entry of that name
        return False


def test_sessions_with_a_shared_arena_draw_from_onnxruntime_s_environment_allocator(bundle_factory):
    x = {"x": np.linspace(0, 1, 64, dtype=np.float32)}
    with load(bundle_factory("fp32"), shared_arena=False) as alone:
        expected = alone.run(x)["logits"]
        assert not _uses_env_allocators(alone)
    first, second = load(bundle_factory("fp32"), shared_arena=True), load(bundle_factory("int4"), shared_arena=True)
    with first, second:
        for session in (first, second):
            assert _uses_env_allocators(session)
        second.run(x)
        np.testing.assert_array_equal(first.run(x)["logits"], expected)
    # Without the CPU arena there is nothing to share: the setting is left off.
    with load(bundle_factory("fp32"), shared_arena=True, cpu_mem_arena=False) as plain:
        assert not _uses_env_allocators(plain)


def test_the_bench_worker_runs_without_torch(bundle_factory):
    """The worker is the device side: it must load and time a bundle with torch blocked."""
    from tests.integration.test_device_side_without_torch import BLOCK_TORCH

    script = BLOCK_TORCH + (
        "import json\n"
        "from geofractal_edge.backends.bench import bench\n"
        f"r = bench([{str(bundle_factory('fp32'))!r}], batches=[1], runs=2, warmup=1)\n"
        "print(json.dumps({'ok': r.subjects[0].batches[0].runs, 'torch': any(m.split('.')[0] == 'torch' for m in sys.modules)}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"ok": 2, "torch": False}


def test_the_overhead_is_the_median_ratio_of_call_pairs_not_the_ratio_of_two_p50s(bundle_factory):
    # Each runner call ran back to back with a bare one; a pair shares the machine's state, two p50s do not.
    plan = prepare([bundle_factory("fp32")], batches=[1])[0]
    info = {"open_seconds": 0.0, "load_seconds": 0.0, "rss": [1, 2, 3], "anon": [1, 2, 3], "heap": [1, 2, 3], "rss_peak": 4, "settings": {},
            "again": {"load_seconds": 0.0, "rss": [1, 2, 3]}}
    runner_ns, bare_ns = [110_000, 190_000, 400_000], [100_000, 200_000, 300_000]  # pairs x1.10, x0.95, x1.33; p50s x0.95
    timing = _result(plan, info, {1: (runner_ns, bare_ns)}).timing(1)
    assert timing.p50_us / timing.bare_p50_us == pytest.approx(0.95)
    assert timing.overhead == pytest.approx(0.10)
