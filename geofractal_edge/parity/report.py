"""A parity report: checks against tolerances, metrics, per-case detail. JSON-able."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    kind: str  # "min": value >= limit; "max": value <= limit

    @property
    def passed(self) -> bool:
        if isinstance(self.value, float) and math.isnan(self.value):
            return False
        return self.value >= self.limit if self.kind == "min" else self.value <= self.limit

    def to_dict(self) -> dict:
        return {**asdict(self), "value": _finite(self.value), "passed": self.passed}


@dataclass
class ParityReport:
    family: str
    precision: str
    target: str
    task_metric: str
    metrics: dict
    checks: list[Check]
    cases: list[dict] = field(default_factory=list)
    providers_used: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "family": self.family,
            "precision": self.precision,
            "target": self.target,
            "task_metric": self.task_metric,
            "metrics": _jsonable(self.metrics),
            "checks": [c.to_dict() for c in self.checks],
            "cases": _jsonable(self.cases),
            "providers_used": self.providers_used,
            "fallbacks": self.fallbacks,
            "seconds": round(self.seconds, 3),
        }


def _finite(value):
    # JSON has no infinity: an exact match (SQNR = inf) is written as a large number, flagged.
    if isinstance(value, float) and math.isinf(value):
        return 1e9 if value > 0 else -1e9
    return value


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return _finite(obj)
