"""ZooState on plain entries (no bundles, no onnxruntime): the budget arithmetic, pins, waits, answers."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from geofractal_edge.runtimes.zoo import BusyError, ModelTooLargeError, UnknownModelError
from geofractal_edge.runtimes.zoo.catalog import LOADING, QUARANTINED, REGISTERED, RESIDENT, Entry
from geofractal_edge.runtimes.zoo.state import MIB, Failed, ZooState


def _entry(name: str, mib: int) -> Entry:
    return Entry(id=name, path=Path(name), signature=(), bundle=SimpleNamespace(model_bytes=mib * MIB), measured_bytes=mib * MIB)


def _state(budget_mib: int, *sizes: tuple[str, int], max_loaded: int | None = None) -> ZooState:
    state = ZooState(budget_bytes=budget_mib * MIB, max_loaded=max_loaded)
    for name, mib in sizes:
        state.install(_entry(name, mib))
    return state


def _load(state: ZooState, name: str, order=sorted) -> list:
    entry = state.pin(name)
    need, victims = state.reserve(entry, evict_order=lambda es: order(e.id for e in es), wait_s=1.0)
    assert entry.state == LOADING and state.accounted_bytes() >= need
    extra = state.loaded(entry, need, session=f"session-{name}", cost=entry.measured_bytes, seconds=0.01, evict_order=lambda es: [])
    state.unpin(entry)
    return [e.id for e, _ in victims + extra]


def test_a_load_evicts_idle_residents_in_the_policys_order_until_it_fits():
    state = _state(30, ("a", 10), ("b", 10), ("c", 10), ("d", 10))
    assert _load(state, "a") == [] and _load(state, "b") == [] and _load(state, "c") == []
    assert state.accounted_bytes() == 30 * MIB
    assert _load(state, "d", order=lambda ids: sorted(ids, reverse=True)) == ["c"]  # the order decides who leaves
    assert [e.id for e in state.entries() if e.state == RESIDENT] == ["a", "b", "d"]
    assert state.get("c").evictions == 1 and state.get("c").session is None


def test_max_loaded_caps_resident_models_besides_bytes():
    state = _state(100, ("a", 1), ("b", 1), ("c", 1), max_loaded=2)
    _load(state, "a")
    _load(state, "b")
    assert _load(state, "c") == ["a"]


def test_a_pinned_resident_is_never_evicted_and_the_load_waits_then_gives_up():
    state = _state(15, ("a", 10), ("b", 10))
    _load(state, "a")
    held = state.pin("a")  # a request is running on it
    waiting = state.pin("b")
    started = time.monotonic()
    with pytest.raises(BusyError, match="no room for 'b'"):
        state.reserve(waiting, evict_order=lambda es: [e.id for e in es], wait_s=0.3)
    assert time.monotonic() - started >= 0.3 and held.state == RESIDENT

    threading.Timer(0.2, state.unpin, args=(held,)).start()  # the run ends: the waiting load proceeds
    need, victims = state.reserve(waiting, evict_order=lambda es: [e.id for e in es], wait_s=5.0)
    assert [e.id for e, _ in victims] == ["a"] and waiting.state == LOADING and need == 10 * MIB


def test_a_model_larger_than_the_budget_is_refused_and_a_quarantined_one_fails():
    state = _state(5, ("big", 10), ("bad", 1))
    with pytest.raises(ModelTooLargeError, match="needs 10.0 MiB, the budget is 5.0 MiB"):
        state.reserve(state.pin("big"), evict_order=list, wait_s=1.0)
    bad = state.get("bad")
    state.quarantine(bad, "load failed: broken")
    with pytest.raises(Failed, match="broken"):
        state.reserve(bad, evict_order=list, wait_s=1.0)
    assert bad.failures == 1


def test_a_failed_load_gives_its_reservation_back_and_is_quarantined():
    state = _state(20, ("a", 10))
    entry = state.pin("a")
    need, _ = state.reserve(entry, evict_order=list, wait_s=1.0)
    assert state.accounted_bytes() == need
    state.load_failed(entry, need, "changed on disk since registration: x")
    assert state.accounted_bytes() == 0 and entry.state == QUARANTINED and entry.reason.startswith("changed on disk")
    assert state.unpin(entry) == []  # nothing was resident


def test_a_resident_quarantined_while_pinned_is_released_when_the_last_pin_goes():
    state = _state(20, ("a", 10))
    _load(state, "a")
    entry = state.pin("a")
    state.quarantine(entry, "run failed: boom")
    victims = state.unpin(entry)
    assert [(e.id, s) for e, s in victims] == [("a", "session-a")] and entry.state == QUARANTINED


def test_install_replaces_an_entry_and_hands_back_its_session_and_removed_folders_are_dropped():
    state = _state(20, ("a", 10), ("b", 10))
    _load(state, "a")
    assert state.is_current("a", ()) and not state.is_current("a", (("model.onnx", 1, 2),)) and not state.is_current("new", ())
    victims = state.install(_entry("a", 12))
    assert [s for _, s in victims] == ["session-a"] and state.get("a").state == REGISTERED
    removed, victims = state.drop_missing({"a"})
    assert removed == ["b"] and victims == []
    with pytest.raises(UnknownModelError, match="known models: a"):
        state.get("b")


def test_an_answer_is_taken_for_feedback_once():
    state = _state(20, ("a", 10))
    entry = state.get("a")
    state.answered(entry, "r1", "ctx")
    assert entry.runs == 1
    assert state.take_answered("r1") == ("a", "ctx") and state.take_answered("r1") is None


def test_an_unmeasured_model_is_expected_to_cost_its_estimate_plus_the_median_overhead():
    state = _state(100, ("a", 10), ("b", 10))
    state.get("a").measured_bytes = 14 * MIB  # 4 MiB over its estimate
    fresh = state.get("b")
    fresh.measured_bytes = None
    assert state.expected(fresh) == 14 * MIB and state.cost(state.get("a")) == 14 * MIB


def test_admission_makes_room_for_a_loads_peak_not_only_its_resident_cost():
    """A load holds more while its session is created (float initializers before prepacking) than the model then costs."""
    state = _state(100, ("a", 60), ("b", 30))
    _load(state, "a")
    state.get("b").peak_bytes = 50 * MIB  # measured at its last load: 60 + 50 would not fit, 60 + 30 would
    assert _load(state, "b") == ["a"]
    assert state.accounted_bytes() == 30 * MIB  # resident, it counts its cost again, not its peak


def test_a_model_whose_load_peaks_over_the_budget_still_loads_with_the_zoo_emptied_first():
    """A remembered peak over the budget reserves the whole budget (everything else evicted); refusing it would keep
    the model out for good, since its peak is only measured again when it loads. A cost over the budget is refused."""
    state = _state(40, ("a", 10), ("b", 30), ("c", 45))
    _load(state, "a")
    state.get("b").peak_bytes = 50 * MIB
    assert _load(state, "b") == ["a"]
    assert state.accounted_bytes() == 30 * MIB
    with pytest.raises(ModelTooLargeError, match=r"needs 45.0 MiB, the budget is 40.0 MiB"):
        state.reserve(state.pin("c"), evict_order=lambda es: [], wait_s=0.1)
