"""Bundles as the benchmarks read them: whether one is there, feeds with its key bound, its parity gates as text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from geofractal_edge.artifacts.manifest import FORMAT_VERSION


def bundle_state(path: Path) -> str:
    """"current", "missing" or "stale (format N, current M)": whether a complete bundle of the current format is at
    `path` (the export writes a bundle's folder whole, manifest included). A bundle an older exporter wrote is stale:
    the benchmarks export it again instead of measuring what the code no longer makes (the hard zoo trace once ran on
    format-2 bundles, static Q/DQ int8 dequantized on every call, three sessions after host-cpu moved to dynamic int8)."""
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        return "missing"
    try:
        found = json.loads(manifest.read_text(encoding="utf-8")).get("format_version")
    except (OSError, ValueError):
        return "missing"
    return "current" if found == FORMAT_VERSION else f"stale (format {found}, current {FORMAT_VERSION})"


def has_bundle(path: Path) -> bool:
    """Whether a complete bundle of the current format is at `path` (`bundle_state`)."""
    return bundle_state(path) == "current"


def require_bundle(path: Path, hint: str) -> None:
    """Stop with one line naming the bundle, why it cannot be read (missing, or stale and its format) and `hint`."""
    state = bundle_state(path)
    if state != "current":
        raise SystemExit(f"bundle {path} is {state}: {hint}")


def keyed(bundle, data: dict[str, np.ndarray], key: str | None) -> dict[str, np.ndarray]:
    """A copy of `data` with the key's vector under the graph's key input, where it has one:
    the feeds of a bare InferenceSession.run, which binds no key itself."""
    full = dict(data)
    key_input = bundle.manifest.graph.key_input
    if key_input is not None:
        full[key_input.name] = bundle.key(key).vector
    return full


def gate_text(check, template: str = "{name} {value:.4g} ({sign} {limit:.4g}) {verdict}", words: tuple[str, str] = ("ok", "FAIL")) -> str:
    """One parity check as text: a check object (manifest or export result) or its JSON dict (`gfedge export --json`).

    `template` may use name, value, limit, kind ("min"/"max"), sign (">="/"<=") and verdict (`words`: passed, failed)."""
    fields = {k: check[k] if isinstance(check, dict) else getattr(check, k) for k in ("name", "value", "limit", "kind", "passed")}
    return template.format(**fields, sign=">=" if fields["kind"] == "min" else "<=", verdict=words[0] if fields["passed"] else words[1])
