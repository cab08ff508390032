"""The bench worker's load answer: no calls' peak (None) when the high-water mark could not be reset,
because VmHWM read without a reset is the load's peak, not the calls'."""

from __future__ import annotations

import weakref

from geofractal_edge.backends import bench_worker
from tests.conftest import check_heap_garbage_lands_mid_heap, heap_garbage

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


def test_memory_freed_before_the_load_is_not_read_as_the_load_costing_less(bundle_factory):
    # The loader trims the heap after it makes its session; without a trim before the first reading, pages freed earlier
    # were handed back inside the load's window (atlas-default's private memory after warm-up read -1.9 MiB).
    check_heap_garbage_lands_mid_heap()
    path = str(bundle_factory("fp32"))
    bench_worker._load({**REQUEST, "path": path}, {})  # onnxruntime's code faulted in: the next load is the bundle's own
    kept = heap_garbage()
    answer = bench_worker._load({**REQUEST, "path": path}, {})
    del kept
    load_rss, load_anon = answer["rss"][1] - answer["rss"][0], answer["anon"][1] - answer["anon"][0]
    assert 0 < load_anon <= load_rss < 32 << 20, (load_anon, load_rss)


def test_the_first_session_is_released_before_the_bundle_loads_again(bundle_factory, monkeypatch):
    # The second load is read as the model's own cost: were the first session still alive, its memory could not be
    # handed back before the reading, and nothing would show that it was not.
    made, alive_at_second = [], []

    class Recorded(bench_worker.Session):
        def __init__(self, *args, **kwargs):
            if made:
                alive_at_second.append(made[0]() is not None)
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    monkeypatch.setattr(bench_worker, "Session", Recorded)
    state = {}
    answer = bench_worker._load({**REQUEST, "path": str(bundle_factory("fp32"))}, state)
    assert len(made) == 2 and alive_at_second == [False]
    assert state["session"] is made[1]()  # the timed runs use the second session
    assert len(answer["again"]["rss"]) == 3 and answer["again"]["load_seconds"] > 0


def test_which_run_goes_first_alternates_across_chunks_not_from_each_chunk_s_start():
    # Chunks are 2-3 runs (60 runs over 25 rounds); restarting the alternation in each chunk made the runner every chunk's
    # first timed call, right after the worker had been idle, and the first of more pairs than the bare run.
    order = []

    class Fake:
        active_key = None

        def run(self, data):
            order.append("runner")

    state = {"session": Fake(), "bare_run": lambda full: order.append("bare"), "feeds": {1: ({}, None)}, "bare": {1: {}}}
    firsts = []
    for runs in (3, 3, 2, 2):
        order.clear()
        answer = bench_worker._time({"batch": 1, "runs": runs}, state)
        assert len(answer["runner_ns"]) == len(answer["bare_ns"]) == runs
        timed = order[2:]  # after the untimed pair
        firsts += [timed[2 * i] for i in range(runs)]
    assert firsts.count("runner") == firsts.count("bare") == 5
    assert [firsts[0], firsts[3], firsts[6], firsts[8]] == ["runner", "bare", "runner", "runner"]  # chunk starts: runs 0, 3, 6, 8
