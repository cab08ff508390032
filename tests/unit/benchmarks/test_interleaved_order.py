"""backends/timing.py (the benchmarks' and export's timing): interleaved rounds in a balanced order, so no variant always runs first or right after the same one."""

from __future__ import annotations

from collections import Counter

import pytest

from geofractal_edge.backends.timing import balanced_orders, interleaved


@pytest.mark.parametrize("n", range(1, 8))
def test_every_index_comes_first_and_after_every_other_equally_often(n):
    orders = balanced_orders(n)
    assert all(sorted(order) == list(range(n)) for order in orders)
    assert len(set(Counter(order[0] for order in orders).values())) == 1
    neighbours = Counter((a, b) for order in orders for a, b in zip(order, order[1:]))
    assert n < 2 or (len(neighbours) == n * (n - 1) and len(set(neighbours.values())) == 1)


def test_rounds_are_whole_cycles_so_no_variant_leads_more_rounds():
    # With the cyclic shift it replaced, [torch, runtime, bare] ran the runtime right after torch in every round but the wrap.
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("torch", "runtime", "bare")}
    samples = interleaved(fns, rounds=4, reps=1, warmup=0, rotate=True)  # 3 variants: 6 orders, so 4 rounds become 6
    assert all(len(s.wall) == 6 for s in samples.values())
    firsts = Counter(calls[i] for i in range(0, len(calls), 3))
    assert firsts == {"torch": 2, "runtime": 2, "bare": 2}
    rounds = [calls[i:i + 3] for i in range(0, len(calls), 3)]
    after_torch = Counter(b for r in rounds for a, b in zip(r, r[1:]) if a == "torch")  # within rounds; their ends add one pair each
    assert after_torch["runtime"] == after_torch["bare"] == 2
