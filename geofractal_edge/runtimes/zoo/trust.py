"""Trust per (model, context): the expertise term of the permission, learned from outcomes.

A model starts from a prior: the task metric its bundle measured at export for that context (the
parity record's per-key char accuracy), else its overall measured metric, else `default`. Each
reported outcome moves the trust towards the measured quality by an exponential moving average;
the first few outcomes move it faster (rate 1/(n+2) until that falls below `rate`), so one early
answer is not drowned by the prior, and a long history still adapts when a model degrades.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class _Cell:
    value: float
    outcomes: int = 0


class TrustTable:
    def __init__(self, *, default: float = 0.5, rate: float = 0.1) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"trust rate must be in (0, 1], got {rate}")
        self.default = default
        self.rate = rate
        self._cells: dict[tuple[str, str], _Cell] = {}
        self._priors: dict[tuple[str, str], float] = {}
        self._model_priors: dict[str, float] = {}
        self._lock = threading.Lock()

    def set_priors(self, model: str, *, overall: float | None, by_context: dict[str, float]) -> None:
        with self._lock:
            if overall is not None:
                self._model_priors[model] = _clip(overall)
            for context, value in by_context.items():
                self._priors[(model, context)] = _clip(value)

    def get(self, model: str, context: str) -> float:
        cell = self._cells.get((model, context))
        if cell is not None:
            return cell.value
        return self._prior(model, context)

    def update(self, model: str, context: str, quality: float) -> float:
        """Move trust towards `quality` (in [0, 1]); returns the new trust."""
        quality = _clip(quality)
        with self._lock:
            cell = self._cells.setdefault((model, context), _Cell(self._prior(model, context)))
            step = max(self.rate, 1.0 / (cell.outcomes + 2))
            cell.value += step * (quality - cell.value)
            cell.outcomes += 1
            return cell.value

    def forget(self, model: str) -> None:
        """Drop what was learned about a model (its bundle changed on disk)."""
        with self._lock:
            for table in (self._cells, self._priors):
                for k in [k for k in table if k[0] == model]:
                    del table[k]
            self._model_priors.pop(model, None)

    def summary(self, model: str) -> dict:
        """Mean trust over the contexts this model has a prior or outcomes for, and each of them."""
        with self._lock:
            contexts = sorted({c for m, c in self._priors if m == model} | {c for m, c in self._cells if m == model})
            by_context = {c: round(self.get(model, c), 4) for c in contexts}
            outcomes = sum(cell.outcomes for (m, _), cell in self._cells.items() if m == model)
        mean = sum(by_context.values()) / len(by_context) if by_context else self._model_priors.get(model, self.default)
        return {"mean": round(mean, 4), "outcomes": outcomes, "by_context": by_context}

    def _prior(self, model: str, context: str) -> float:
        return self._priors.get((model, context), self._model_priors.get(model, self.default))


def _clip(value: float) -> float:
    return min(1.0, max(0.0, float(value)))


def priors_from_manifest(manifest) -> tuple[float | None, dict[str, float]]:
    """(overall, per-key) task metric measured at export, as fractions; (None, {}) if none recorded."""
    parity = manifest.parity
    if parity is None:
        return None, {}
    metric = parity.task_metric
    measured = parity.metrics.get(metric)
    overall = measured.get("runtime") if isinstance(measured, dict) else None
    by_key = {}
    for case in parity.cases:
        value = case.get(f"{metric}_runtime")
        if isinstance(case.get("key"), str) and isinstance(value, (int, float)) and not isinstance(value, bool):
            by_key[case["key"]] = float(value) / 100.0
    return (float(overall) / 100.0 if isinstance(overall, (int, float)) else None), by_key
