"""Latent key files: one safetensors file per key, with metadata naming the core it belongs to.

A key is a float32 vector. Its metadata carries the format, the family, the key's name, its
dimension and the sha256 of the frozen core it was trained against; a key is refused by any other
core. No torch here: keys are read on the device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import save

from geofractal_edge.artifacts import atomic
from geofractal_edge.artifacts.tensorfile import load_with_metadata
from geofractal_edge.errors import KeyFileError

KEY_FORMAT = "gfedge-key/1"
_TENSOR = "key"


@dataclass(frozen=True)
class Key:
    name: str
    vector: np.ndarray  # [dim] float32
    core_sha256: str
    family: str

    @property
    def dim(self) -> int:
        return int(self.vector.shape[0])


def write_key(path: Path, key: Key) -> None:
    vector = np.ascontiguousarray(key.vector, dtype=np.float32).reshape(-1)
    metadata = {
        "format": KEY_FORMAT,
        "name": key.name,
        "family": key.family,
        "dim": str(vector.shape[0]),
        "core_sha256": key.core_sha256,
    }
    atomic.write_bytes(Path(path), save({_TENSOR: vector}, metadata=metadata))


def read_key(path: Path) -> Key:
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"key file {path} does not exist", "check the path, or list keys with `gfedge inspect`")
    data = path.read_bytes()
    try:
        tensors, metadata = load_with_metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise KeyFileError(f"key file {path} is not a valid safetensors key ({exc})", "re-export or re-train the key") from exc
    if metadata.get("format") != KEY_FORMAT or _TENSOR not in tensors:
        raise KeyFileError(f"{path} is not a gfedge key file", "write keys with `gfedge train atlas --key-only`")
    vector = tensors[_TENSOR].astype(np.float32).reshape(-1)
    if str(vector.shape[0]) != metadata.get("dim"):
        raise KeyFileError(f"key file {path} says dim {metadata.get('dim')} but holds {vector.shape[0]} values", "re-train the key")
    return Key(name=metadata["name"], vector=vector, core_sha256=metadata["core_sha256"], family=metadata.get("family", ""))


def check_key(key: Key, *, dim: int, core_sha256: str, source: str = "") -> None:
    """Refuse a key of the wrong dimension or one made for a different core."""
    where = f" ({source})" if source else ""
    if key.dim != dim:
        raise KeyFileError(f"key '{key.name}'{where} has dimension {key.dim}, this model takes {dim}", "use a key trained for this model")
    if key.core_sha256 != core_sha256:
        raise KeyFileError(
            f"key '{key.name}'{where} was made for core {key.core_sha256[:12]}, this model's core is {core_sha256[:12]}",
            "train the key against this core: gfedge train atlas --key-only --model CKPT",
        )

