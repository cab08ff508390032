"""The bench worker's load answer: no calls' peak (None) when the high-water mark could not be reset,
because VmHWM read without a reset is the load's peak, not the calls'."""

from __future__ import annotations

from geofractal_edge.backends import bench_worker

REQUEST = {"op": "load", "batches": [1], "warmup": 1, "settings": {"intra_op_threads": 1}}


def test_no_peak_is_reported_when_the_high_water_mark_cannot_be_reset(bundle_factory, monkeypatch):
    monkeypatch.setattr(bench_worker, "reset_peak_rss", lambda: False)  # non-Linux, or /proc/self/clear_refs refused
    monkeypatch.setattr(bench_worker, "peak_rss_bytes", lambda: 123 << 20)  # a reading is there: it must not be reported
    answer = bench_worker._load({**REQUEST, "path": str(bundle_factory("fp32"))}, {})
    assert answer["rss_peak"] is None
    assert len(answer["rss"]) == 3  # the rest of the answer as usual


def test_the_calls_peak_is_reported_after_a_reset(bundle_factory, monkeypatch):
    monkeypatch.setattr(bench_worker, "reset_peak_rss", lambda: True)
    monkeypatch.setattr(bench_worker, "peak_rss_bytes", lambda: 123 << 20)
    answer = bench_worker._load({**REQUEST, "path": str(bundle_factory("fp32"))}, {})
    assert answer["rss_peak"] == 123 << 20
