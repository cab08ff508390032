"""Tolerances per precision: the shipped table, with a family's overrides from the manifest."""

from __future__ import annotations

import functools
import tomllib
from importlib import resources

from geofractal_edge.errors import Bug, GfedgeError
from geofractal_edge.targets.precisions import PRECISIONS


@functools.cache
def shipped() -> dict[str, dict[str, float]]:
    """tolerances.toml: one table per precision in PRECISIONS."""
    text = (resources.files("geofractal_edge.parity") / "tolerances.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def tolerances_for(precision: str, overrides: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
    if precision not in PRECISIONS:
        raise GfedgeError(f"no parity tolerances for precision '{precision}'", f"known: {', '.join(PRECISIONS)}")
    table = shipped()
    if precision not in table:
        raise Bug(f"tolerances.toml has no [{precision}] table, though {precision} is an exported precision")
    return {**table[precision], **(overrides or {}).get(precision, {})}
