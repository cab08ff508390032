"""What the exporter gets from a family, and how a family is found by name.

A family module provides `load_exportable(model: Path | None, *, progress) -> Exportable` and
`train(...)`; with no checkpoint it uses the family's embedded default. Family modules load
lazily, so naming a family costs nothing until it is used.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.spec import ExportSpec

FAMILIES = {
    "atlas": "geofractal_edge.models.atlas.family",
    "trix": "geofractal_edge.models.trix.family",
    "collective": "geofractal_edge.models.collective.family",
    "collective-encoder": "geofractal_edge.models.collective.encoder",
}
Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class Case:
    """One golden case before torch has run it: data inputs, the key it uses, task labels."""

    name: str
    inputs: dict[str, np.ndarray]
    key: str | None = None
    labels: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Exportable:
    family: str
    name: str
    module: Any  # torch.nn.Module whose forward takes the spec's inputs in order
    spec: ExportSpec
    config: dict
    cases: list[Case]
    keys: dict[str, np.ndarray] = field(default_factory=dict)
    core_sha256: str = ""
    task: dict = field(default_factory=dict)  # metric name plus what decoding needs (vocab)
    source: dict = field(default_factory=dict)  # checkpoint path and sha256, or "embedded default"
    info: dict = field(default_factory=dict)  # family-specific facts for `gfedge inspect` (routing, tiles)
    key_lengths: dict[str, int] = field(default_factory=dict)  # Atlas: characters of the text each key stores
    files: dict[str, bytes] = field(default_factory=dict)  # extra bundle files by relative path (an encoder's tokenizer)
    tokenizer: dict | None = None  # the manifest's `tokenizer` section, naming one of `files`

    def feeds(self, case: Case) -> dict[str, np.ndarray]:
        """The full input dict of a case: its data inputs plus the key vector, if any."""
        feeds = dict(case.inputs)
        if self.spec.key_input and case.key is not None:
            feeds[self.spec.key_input] = self.keys[case.key]
        return feeds

    def calibration(self) -> tuple[Mapping[str, np.ndarray], ...]:
        return tuple(self.feeds(case) for case in self.cases)


def family_module(name: str):
    if name not in FAMILIES:
        raise GfedgeError(f"unknown family '{name}'", f"known families: {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[name])


def cache_dir() -> Path:
    """Where embedded defaults are cached after their first training: $GFEDGE_CACHE or ~/.cache."""
    root = os.environ.get("GFEDGE_CACHE") or Path.home() / ".cache" / "geofractal_edge"
    return Path(root)


def read_text(path: Path, *, what: str, missing_fix: str) -> str:
    """A UTF-8 text file (training text, calibration text), or one GfedgeError line naming `what` and the fix."""
    if not Path(path).is_file():
        raise GfedgeError(f"{what} does not exist", missing_fix)
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise GfedgeError(f"{what} is not UTF-8 ({exc.reason})", "convert it to UTF-8") from exc
