"""Interleaved timing: variants called round by round, so that machine noise hits them alike."""

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
    (an int, or one count per name); a sample is the mean of one round's calls. `rotate`: the order of the
    fns shifts by one every round, so that none always runs first or after the same neighbour."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    counts = reps if isinstance(reps, dict) else dict.fromkeys(fns, reps)
    samples = {name: Samples() for name in fns}
    names = list(fns)
    for r in range(rounds):
        shift = r % len(names) if rotate else 0
        for name in names[shift:] + names[:shift]:
            fn, n = fns[name], counts[name]
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                fn()
            samples[name].wall.append((time.perf_counter() - w0) / n)
            samples[name].cpu.append((time.process_time() - c0) / n)
    return samples
