"""Interleaved timing: variants called round by round, so that machine noise hits them alike (the benchmarks, and
export's small-call and int4 measurements). No torch."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Samples:
    """One variant's seconds per call, one sample per round: wall clock and this process's CPU time.

    CPU time is what the calls themselves consumed: on a shared machine it does not count the time
    other jobs held the core, so it is the steadier number; wall time is what a caller waits.
    """

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def interleaved(fns: dict[str, Callable[[], object]], *, rounds: int, reps: int | dict[str, int], warmup: int,
                rotate: bool = False) -> dict[str, Samples]:
    """Each fn called `warmup` times, then `rounds` rounds in which every fn makes `reps` back-to-back calls
    (an int, or one count per name); a sample is the mean of one round's calls. `rotate`: the rounds' orders
    follow a Williams design (`balanced_orders`), so that every fn runs first equally often and after every
    other fn equally often; `rounds` is then rounded up to whole cycles of the design (n or 2n orders). (Shifting the order by one each round kept its cyclic order: in [torch, runtime,
    bare] the runtime ran right after torch's cache-clearing calls, and the bare run after the runtime's, in
    every round but one in three, which charged the cold start to the runtime's overhead.)"""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    counts = reps if isinstance(reps, dict) else dict.fromkeys(fns, reps)
    samples = {name: Samples() for name in fns}
    names = list(fns)
    orders = balanced_orders(len(names)) if rotate else [list(range(len(names)))]
    if rotate:
        rounds = -(-rounds // len(orders)) * len(orders)  # whole cycles: a part-cycle puts some fns first more often
    for r in range(rounds):
        for name in (names[i] for i in orders[r % len(orders)]):
            fn, n = fns[name], counts[name]
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                fn()
            samples[name].wall.append((time.perf_counter() - w0) / n)
            samples[name].cpu.append((time.process_time() - c0) / n)
    return samples


def calibrated(fns: dict[str, Callable[[], object]], *, rounds: int, round_seconds: float, warm_up: int,
               calls: tuple[int, int]) -> dict[str, Samples]:
    """`interleaved` with the order rotating, after every fn has been called `warm_up` times (first-call allocations and
    prepacking out of the way) and with as many calls per round as make one round of the first fn last about
    `round_seconds` (at least calls[0], at most calls[1]): what export's measurements time."""
    for fn in fns.values():
        for _ in range(warm_up):
            fn()
    first = next(iter(fns.values()))
    start = time.perf_counter()
    first()
    reps = max(calls[0], min(calls[1], int(round_seconds / max(time.perf_counter() - start, 1e-6))))
    return interleaved(fns, rounds=rounds, reps=reps, warmup=0, rotate=True)


def balanced_orders(n: int) -> list[list[int]]:
    """A Williams design: n orders of range(n) (2n when n is odd) in which each index comes first equally often and
    right after each other index equally often. First order 0, 1, n-1, 2, n-2, ...; the others add 1, 2, ... mod n."""
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low if len(first) % 2 else high)
        low, high = (low + 1, high) if len(first) % 2 == 0 else (low, high - 1)
    orders = [[(i + r) % n for i in first] for r in range(n)]
    return orders + [order[::-1] for order in orders] if n % 2 else orders
