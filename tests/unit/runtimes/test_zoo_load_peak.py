"""A load's peak, measured with a fake cost model: the meter's high-water mark during the load becomes the
model's `peak_bytes` (remembered in the memory book), and the next load reserves it; without a mark that
could be reset, or with other work beside the load, no peak is kept and loads reserve their cost as before."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from geofractal_edge.runtimes.zoo.catalog import Entry
from geofractal_edge.runtimes.zoo.memory import MemoryBook, Reading
from geofractal_edge.runtimes.zoo.metrics import Metrics
from geofractal_edge.runtimes.zoo.residency import Residency
from geofractal_edge.runtimes.zoo.state import MIB, ZooState

COST, PEAK = 30 * MIB, 50 * MIB  # the fake model: its load rises 50 MiB above the start, then keeps 30


class FakeMeter:
    def __init__(self, *, resettable: bool = True, peak: int = PEAK, cost: int = COST) -> None:
        self.rss = self.high = 100 * MIB
        self.resettable, self.peak, self.cost = resettable, peak, cost

    def read(self) -> Reading:
        return Reading(rss=self.rss, device=None)

    def reset_peak(self) -> bool:
        self.high = self.rss
        return self.resettable

    def peak_rss(self) -> int:
        return self.high

    def load(self) -> str:
        self.high = max(self.high, self.rss + self.peak)
        self.rss += self.cost
        return "session"


def _residency(tmp_path: Path, meter: FakeMeter, *, beside=None) -> tuple[Residency, Entry, MemoryBook]:
    state = ZooState(budget_bytes=200 * MIB)
    entry = Entry(id="m", path=Path("m"), signature=(), bundle=SimpleNamespace(model_bytes=COST), manifest_sha="sha")
    state.install(entry)
    book = MemoryBook(tmp_path / "book.json")
    residency = Residency(state, evict_order=lambda es: [e.id for e in es], meter=meter, metrics=Metrics(), book=book, keyring=None)

    def new_session(_entry):
        if beside is not None:
            beside(state)
        return meter.load()

    residency.new_session = new_session
    return residency, entry, book


def test_a_loads_peak_is_measured_remembered_and_reserved_next_time(tmp_path):
    meter = FakeMeter()
    residency, entry, book = _residency(tmp_path, meter)
    state = residency.state
    state.pin("m")
    assert residency.bring_in(entry, count="swaps") is True
    assert entry.measured_bytes == COST and entry.peak_bytes == PEAK
    assert book.get("sha")["peak_bytes"] == PEAK and MemoryBook(tmp_path / "book.json").get("sha")["peak_bytes"] == PEAK
    assert state.expected_peak(entry) == PEAK and state.accounted_bytes() == COST


def test_no_peak_is_kept_where_the_mark_cannot_be_reset(tmp_path):
    residency, entry, book = _residency(tmp_path, FakeMeter(resettable=False))
    residency.state.pin("m")
    residency.bring_in(entry, count="swaps")
    assert entry.measured_bytes == COST and entry.peak_bytes is None and "peak_bytes" not in book.get("sha")
    assert residency.state.expected_peak(entry) == COST


def test_no_peak_is_kept_from_a_load_beside_other_work(tmp_path):
    def a_run_beside(state):  # a request on another model runs while this one loads
        state.end_work(state.begin_work())

    residency, entry, _ = _residency(tmp_path, FakeMeter(), beside=a_run_beside)
    residency.state.pin("m")
    residency.bring_in(entry, count="swaps")
    assert entry.measured_bytes == COST and entry.peak_bytes is None


def test_a_load_beside_other_work_keeps_the_peak_an_earlier_load_measured(tmp_path):
    def a_run_beside(state):
        state.end_work(state.begin_work())

    residency, entry, book = _residency(tmp_path, FakeMeter(), beside=a_run_beside)
    entry.measured_bytes, entry.peak_bytes = COST, PEAK  # measured alone before
    residency.state.pin("m")
    residency.bring_in(entry, count="swaps")
    assert entry.peak_bytes == PEAK and book.get("sha")["peak_bytes"] == PEAK  # the book is rewritten, its peak kept


def test_a_wild_peak_is_not_kept(tmp_path):
    """Beyond 4 x its cost + 32 MiB a mark is other work's, not this load's: reserving it would evict for nothing."""
    residency, entry, book = _residency(tmp_path, FakeMeter(peak=1 << 30))
    residency.state.pin("m")
    residency.bring_in(entry, count="swaps")
    assert entry.measured_bytes == COST and entry.peak_bytes is None and "peak_bytes" not in book.get("sha")


def test_a_noisy_load_counts_its_expected_cost_not_the_peak_it_reserved(tmp_path):
    residency, entry, book = _residency(tmp_path, FakeMeter(cost=150 * MIB, peak=150 * MIB))  # over 2 x its last cost: noise
    entry.measured_bytes, entry.peak_bytes = COST, PEAK  # measured before
    residency.state.pin("m")
    residency.bring_in(entry, count="swaps")
    assert entry.measured_bytes == COST and entry.peak_bytes == PEAK and residency.state.accounted_bytes() == COST
    assert book.get("sha") is None  # nothing of a noisy load is remembered


@pytest.mark.parametrize("rise", [10 * MIB, COST, PEAK, 3 * COST])
def test_a_loads_cost_and_peak_are_its_own_rise_above_where_it_started(tmp_path, rise):
    """The process moved after the zoo read its baseline (a request body parsed, a model evicted) and its mark stands
    higher from before: the load is charged what it grew the process by, and its peak is its own rise above where it
    started, never below that cost, never the earlier mark."""
    meter = FakeMeter(peak=rise)
    residency, entry, book = _residency(tmp_path, meter)
    meter.rss += 40 * MIB  # since the baseline, before the load
    meter.high = meter.rss + 70 * MIB  # an earlier high-water mark, not this load's
    residency.state.pin("m")
    residency.bring_in(entry, count="swaps")
    assert entry.measured_bytes == COST and book.get("sha")["measured_bytes"] == COST
    assert entry.peak_bytes == max(rise, COST) == book.get("sha")["peak_bytes"]


def test_a_peak_below_the_loads_cost_counts_as_its_cost(tmp_path):
    """The mark rose 10 MiB while the load keeps 30 (a mark read coarser than the RSS): the peak is at least the cost."""
    residency, entry, book = _residency(tmp_path, FakeMeter(peak=10 * MIB))
    residency.state.pin("m")
    residency.bring_in(entry, count="swaps")
    assert entry.peak_bytes == COST and book.get("sha")["peak_bytes"] == COST


def test_a_book_record_with_a_malformed_peak_is_ignored(tmp_path):
    path = tmp_path / "book.json"
    path.write_text('{"good": {"measured_bytes": 1, "load_seconds": null, "peak_bytes": 2}, '
                    '"bad": {"measured_bytes": 1, "load_seconds": null, "peak_bytes": -2}}')
    book = MemoryBook(path)
    assert book.get("good")["peak_bytes"] == 2 and book.get("bad") is None
