"""What the zoo measures while serving: hits, swaps, latency, chosen-model quality, memory over time.

A selection is a hit when the chosen model was already resident; a swap is a load made for a
request (prefetches and explicit loads are counted apart). Latency is the whole request as the zoo
sees it: selection, any wait and load, and the run. Quality is what callers report with feedback.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np


class Metrics:
    def __init__(self, *, window: int = 20_000) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.selections = 0
        self.hits = 0
        self.swaps = 0
        self.prefetches = 0
        self.explicit_loads = 0
        self.evictions = 0
        self.failures = 0  # load or run failures that moved a request on to the next candidate
        self.fallbacks = 0  # sage passed over a low-trust winner
        self.errors = 0  # requests that ended in an error
        self._latency = deque(maxlen=window)
        self._quality_sum = 0.0
        self._quality_n = 0
        self.timeline: deque[tuple[float, int, int]] = deque(maxlen=window)  # (seconds, accounted, measured)

    def selected(self, *, hit: bool, fallback: bool) -> None:
        with self._lock:
            self.selections += 1
            self.hits += hit
            self.fallbacks += fallback

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def finished(self, seconds: float) -> None:
        with self._lock:
            self._latency.append(seconds)

    def quality(self, value: float) -> None:
        with self._lock:
            self._quality_sum += value
            self._quality_n += 1

    def memory(self, accounted: int, measured: int) -> None:
        with self._lock:
            self.timeline.append((time.monotonic() - self.started, accounted, measured))

    def summary(self) -> dict:
        with self._lock:
            latency = np.asarray(self._latency, dtype=np.float64)
            n = self.selections
            return {
                "selections": n,
                "hits": self.hits,
                "hit_rate": self.hits / n if n else None,
                "swaps": self.swaps,
                "swaps_per_selection": self.swaps / n if n else None,
                "prefetches": self.prefetches,
                "explicit_loads": self.explicit_loads,
                "evictions": self.evictions,
                "failures": self.failures,
                "fallbacks": self.fallbacks,
                "errors": self.errors,
                "p50_ms": float(np.percentile(latency, 50) * 1e3) if latency.size else None,
                "p99_ms": float(np.percentile(latency, 99) * 1e3) if latency.size else None,
                "mean_quality": self._quality_sum / self._quality_n if self._quality_n else None,
                "feedback": self._quality_n,
            }
