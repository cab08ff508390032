"""Read inputs and write outputs for `gfedge run`: .safetensors, .npz (no pickle) or .json."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from geofractal_edge.artifacts import atomic
from geofractal_edge.errors import InputError

FORMATS = (".safetensors", ".npz", ".json")


def read_inputs(path: Path, specs: list[dict]) -> dict[str, np.ndarray]:
    """Arrays by name. JSON has no dtypes, so JSON lists take the dtype the manifest declares."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file {path} does not exist", "check the --input path")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            return dict(load(path.read_bytes()))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        if suffix == ".json":
            return _from_json(json.loads(path.read_text(encoding="utf-8")), specs)
    except (SafetensorError, ValueError, OSError) as exc:
        raise InputError(f"cannot read {path} ({exc})".replace("\n", " "), f"write it as one of {', '.join(FORMATS)}") from exc
    raise InputError(f"input file {path} has an unknown format '{suffix}'", f"use one of {', '.join(FORMATS)}")


def _from_json(data, specs: list[dict]) -> dict[str, np.ndarray]:
    if not isinstance(data, dict):
        raise InputError("JSON input must be an object of input name -> list", 'e.g. {"x": [0.0, 0.5, 1.0]}')
    dtypes = {s["name"]: s["dtype"] for s in specs}
    return {name: np.asarray(value, dtype=dtypes.get(name, "float32")) for name, value in data.items()}


def write_outputs(path: Path, outputs: dict[str, np.ndarray]) -> None:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        data = save({k: np.ascontiguousarray(v) for k, v in outputs.items()})
    elif suffix == ".npz":
        buffer = io.BytesIO()
        np.savez(buffer, **outputs)
        data = buffer.getvalue()
    elif suffix == ".json":
        data = json.dumps({k: v.tolist() for k, v in outputs.items()}).encode()
    else:
        raise InputError(f"output file {path} has an unknown format '{suffix}'", f"use one of {', '.join(FORMATS)}")
    atomic.write_bytes(path, data)
