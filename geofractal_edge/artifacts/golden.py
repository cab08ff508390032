"""Golden cases: inputs and the torch outputs they produced, stored in the bundle as safetensors.

One file per case: tensors `in.<input>`, `out.<output>` and `label.<name>` (task labels, e.g. the
true characters), and metadata naming the key the case runs with. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from geofractal_edge.artifacts import atomic
from geofractal_edge.artifacts.tensorfile import load_with_metadata


@dataclass(frozen=True)
class GoldenCase:
    name: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    key: str | None = None


def write_case(path: Path, case: GoldenCase) -> None:
    tensors = {f"in.{k}": np.ascontiguousarray(v) for k, v in case.inputs.items()}
    tensors |= {f"out.{k}": np.ascontiguousarray(v) for k, v in case.outputs.items()}
    tensors |= {f"label.{k}": np.ascontiguousarray(v) for k, v in case.labels.items()}
    metadata = {"name": case.name, "key": case.key or ""}
    atomic.write_bytes(path, save(tensors, metadata=metadata))


def read_case(path: Path, *, name: str) -> GoldenCase:
    tensors, metadata = load_with_metadata(Path(path).read_bytes())

    def part(prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    return GoldenCase(
        name=metadata.get("name", name),
        inputs=part("in."),
        outputs=part("out."),
        labels=part("label."),
        key=metadata.get("key") or None,
    )
