"""Zoo selection policies and trust, on plain views: no bundles, no onnxruntime."""

from types import SimpleNamespace
import pytest

from geofractal_edge.errors import GfedgeError
from geofractal_edge.runtimes.zoo import LRU, AlwaysBest, Sage, TrustTable, View, make_policy
from geofractal_edge.runtimes.zoo.policy import BLOCKED
from geofractal_edge.artifacts.manifest import ParityRecord
from geofractal_edge.artifacts.schema import parse
from geofractal_edge.runtimes.zoo.trust import priors_from_manifest


def test_sage_permission_is_expertise_times_cheapness_times_persistence():
    sage = Sage()
    assert sage.permission(View("hot", expertise=0.8, resident=True, swap_cost=5.0)) == pytest.approx(0.8 * 1.0 * 1.2)
    assert sage.permission(View("cold", expertise=0.9, resident=False, swap_cost=0.5)) == pytest.approx(0.9 / 1.5)
    assert sage.permission(View("full", expertise=0.9, resident=False, swap_cost=0.5, fits=False)) == pytest.approx(0.9 / (1 + BLOCKED))


def test_sage_keeps_a_resident_model_unless_the_other_is_clearly_better():
    sage = Sage()
    resident = View("resident", expertise=0.60, resident=True)  # permission 0.72
    slightly_better = View("slightly-better", expertise=0.75, resident=False, swap_cost=0.1)  # 0.68
    much_better = View("much-better", expertise=0.99, resident=False, swap_cost=0.1)
    assert sage.rank([slightly_better, resident]).order[0] == "resident"  # hysteresis: no thrashing on near ties
    assert sage.rank([resident, much_better]).order[0] == "much-better"
    assert AlwaysBest().rank([slightly_better, resident]).order[0] == "slightly-better"


def test_sage_blocks_a_swap_the_budget_cannot_take():
    sage = Sage()
    held = View("fits", expertise=0.5, resident=False, swap_cost=0.2)
    blocked = View("blocked", expertise=0.95, resident=False, swap_cost=0.2, fits=False)
    assert sage.rank([blocked, held]).order == ["fits", "blocked"]


def test_sage_falls_back_to_the_best_trusted_alternative_below_the_threshold():
    sage = Sage(trust_threshold=0.5)
    cheap_but_untrusted = View("untrusted", expertise=0.4, resident=True)
    trusted = View("trusted", expertise=0.45, resident=False, swap_cost=3.0)
    ranking = sage.rank([cheap_but_untrusted, trusted])
    assert ranking.order == ["trusted", "untrusted"]
    assert ranking.fallback_from == "untrusted"
    # above the threshold the permission decides, with no fallback
    ranking = Sage(trust_threshold=0.3).rank([cheap_but_untrusted, trusted])
    assert ranking.order[0] == "untrusted" and ranking.fallback_from is None


def test_sage_never_buys_a_far_worse_answer_with_cheapness():
    """Under a budget that holds one specialist, a resident generalist (0.44) out-scored a fitting
    specialist (1.0) whose swap cost was ~1 (0.53 vs 0.49) for a whole phase: the relative floor."""
    generalist = View("gen", expertise=0.44, resident=True)
    specialist = View("b-int8", expertise=1.0, resident=False, swap_cost=1.05)
    assert Sage().permission(generalist) > Sage().permission(specialist)  # the flaw the floor fixes
    ranking = Sage().rank([generalist, specialist])
    assert ranking.order == ["b-int8", "gen"] and ranking.fallback_from == "gen"
    assert Sage(relative_floor=0.0).rank([generalist, specialist]).order[0] == "gen"  # the old behaviour
    # near the best (>= 0.75 x its trust) cheapness and persistence still decide: hysteresis is kept
    near = View("a-int8", expertise=0.8, resident=True)
    assert Sage().rank([near, specialist]).order[0] == "a-int8"
    # a better model that cannot fit does not displace the winner
    blocked = View("big", expertise=1.0, resident=False, swap_cost=1.0, fits=False)
    ranking = Sage().rank([generalist, blocked])
    assert ranking.order[0] == "gen" and ranking.fallback_from is None


def test_low_power_prefers_the_small_model_among_near_equals():
    sage = Sage()
    big = View("fp32", expertise=1.0, resident=True, bytes=4_000_000)
    small = View("int4", expertise=0.95, resident=True, bytes=600_000)
    assert sage.rank([big, small]).order[0] == "fp32"
    assert sage.rank([big, small], low_power=True).order[0] == "int4"
    # but not when the small one is much worse
    poor = View("int4", expertise=0.3, resident=True, bytes=600_000)
    assert sage.rank([big, poor], low_power=True).order[0] == "fp32"


def test_eviction_orders():
    old_good = View("old-good", expertise=0.9, resident=True, last_used=1.0)
    new_useless = View("new-useless", expertise=0.0, resident=True, last_used=9.0)
    mid = View("mid", expertise=0.9, resident=True, last_used=5.0)
    assert Sage().evict_order([old_good, new_useless, mid]) == ["new-useless", "old-good", "mid"]  # lowest permission, then LRU
    assert LRU().evict_order([old_good, new_useless, mid]) == ["old-good", "mid", "new-useless"]
    assert AlwaysBest().evict_order([old_good, new_useless, mid]) == ["old-good", "mid", "new-useless"]


def test_lru_uses_the_most_recent_resident_candidate_and_loads_the_best_on_a_miss():
    lru = LRU()
    views = [View("a", 0.9, resident=True, last_used=1.0), View("b", 0.2, resident=True, last_used=2.0), View("c", 1.0, resident=False)]
    assert lru.rank(views).order == ["b", "a", "c"]
    assert lru.rank([View("x", 0.5, resident=False), View("y", 0.7, resident=False)]).order == ["y", "x"]


def test_make_policy_names_the_known_policies():
    assert make_policy("sage", persistence=1.5).persistence == 1.5
    assert make_policy("always-best").name == "always-best"
    with pytest.raises(GfedgeError, match="sage, lru, always-best"):
        make_policy("fifo")


def test_trust_starts_from_priors_and_follows_outcomes():
    trust = TrustTable(default=0.5, rate=0.1)
    trust.set_priors("m", overall=0.9, by_context={"alice": 1.0})
    assert trust.get("m", "alice") == 1.0
    assert trust.get("m", "bob") == 0.9  # the model's overall measured metric
    assert trust.get("other", "alice") == 0.5  # nothing known: the default
    first = trust.update("m", "alice", 0.0)
    assert first == pytest.approx(0.5)  # the first outcome moves halfway (rate 1/(n+2))
    for _ in range(100):
        value = trust.update("m", "alice", 0.2)
    assert value == pytest.approx(0.2, abs=1e-3)
    summary = trust.summary("m")
    assert summary["outcomes"] == 101 and summary["by_context"]["alice"] == pytest.approx(0.2, abs=1e-3)
    trust.forget("m")
    assert trust.get("m", "alice") == 0.5


def test_priors_come_from_the_parity_record():
    data = {
        "task": {"metric": "char_accuracy"},
        "parity": {
            "passed": True, "family": "atlas", "precision": "int8", "target": "host-cpu", "checks": [],
            "task_metric": "char_accuracy",
            "metrics": {"char_accuracy": {"torch": 100.0, "runtime": 97.5}},
            "cases": [{"key": "alice", "char_accuracy_runtime": 95.0}, {"key": "bob", "char_accuracy_runtime": 100.0}],
        },
    }
    assert priors_from_manifest(SimpleNamespace(parity=parse(ParityRecord, data["parity"]))) == (0.975, {"alice": 0.95, "bob": 1.0})
    assert priors_from_manifest(SimpleNamespace(parity=None)) == (None, {})


def test_sage_on_a_shifting_trace_swaps_less_than_always_best_at_near_equal_quality():
    """A tiny simulation: two near-equal models whose measured quality jitters, one slot."""
    import random

    rng = random.Random(0)

    def replay(policy) -> int:
        trust = TrustTable(rate=0.3)
        for m in ("fp32", "int8"):
            trust.set_priors(m, overall=0.965, by_context={})  # as measured at export: a near tie
        resident, swaps = None, 0
        for _ in range(500):
            views = [View(m, trust.get(m, "c"), resident=m == resident, swap_cost=0.05) for m in ("fp32", "int8")]
            chosen = policy.rank(views).order[0]
            swaps += chosen != resident
            resident = chosen
            trust.update(chosen, "c", 0.965 + rng.uniform(-0.03, 0.03))  # same true quality
        return swaps

    assert replay(Sage()) == 1  # the first load, then hysteresis holds
    assert replay(AlwaysBest()) >= 4  # swaps whenever measurement noise reorders the two
