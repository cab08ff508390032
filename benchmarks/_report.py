"""What the benchmarks print beside their figures: timestamped log lines, the load average, MiB, training progress."""

from __future__ import annotations

import os
import sys
import time

MIB = 1 << 20


def log(message: str) -> None:
    """`message` after the wall-clock time, flushed at once: a long stage shows where it is."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def uptime() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` prints them."""
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def load_span(machine: dict, sep: str = " -> ") -> str:
    """The 1-minute load average when a backends.bench run started and ended (its report's `machine`)."""
    return f"{machine['load_average_start'][0]:.2f}{sep}{machine['load_average_end'][0]:.2f}"


def progress(label: str):
    """A training callback `(step, total, loss)` that prints to stderr every fifth of the steps and at the last."""

    def report(step: int, total: int, loss: float) -> None:
        if step == total or step % max(total // 5, 1) == 0:
            print(f"  {label}: step {step}/{total} loss {loss:.3f}", file=sys.stderr, flush=True)

    return report
