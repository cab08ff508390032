"""Tolerances per precision: the shipped table, with a family's overrides from the manifest."""

from __future__ import annotations

import functools
import tomllib
from importlib import resources

from geofractal_edge.errors import GfedgeError


@functools.cache
def shipped() -> dict[str, dict[str, float]]:
    text = (resources.files("geofractal_edge.parity") / "tolerances.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def tolerances_for(precision: str, overrides: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
    table = shipped()
    if precision not in table:
        raise GfedgeError(f"no parity tolerances for precision '{precision}'", f"known: {', '.join(table)}")
    return {**table[precision], **(overrides or {}).get(precision, {})}
