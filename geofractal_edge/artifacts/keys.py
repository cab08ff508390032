"""Latent key files: one safetensors file per key, with metadata naming the core it belongs to.

A key is a float32 vector. Its metadata carries the format, the family, the key's name, its
dimension and the sha256 of the frozen core it was trained against; a key is refused by any other
core. No torch here: keys are read on the device.
"""

from __future__ import annotations

import json
import re
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
MAX_KEY_BYTES = 1 << 20  # a 64-float key is ~400 bytes; this leaves room for 250k floats
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Key:
    name: str
    vector: np.ndarray  # [dim] float32
    core_sha256: str
    family: str
    length: int | None = None  # Atlas: characters of the text the key stores (recall needs it)

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
    if key.length is not None:
        metadata["length"] = str(int(key.length))
    atomic.write_bytes(Path(path), save({_TENSOR: vector}, metadata=metadata))


def read_key(path: Path) -> Key:
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"key file {path} does not exist", "check the path, or list keys with `gfedge inspect`")
    if path.stat().st_size > MAX_KEY_BYTES:
        raise KeyFileError(f"key file {path} is {path.stat().st_size:,} bytes, more than a key can be", "pass a key file written by `gfedge train atlas --key-only`")
    data = path.read_bytes()
    try:
        tensors, metadata = load_with_metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise KeyFileError(f"key file {path} is not a valid safetensors key ({exc})", "re-export or re-train the key") from exc
    if metadata.get("format") != KEY_FORMAT or set(tensors) != {_TENSOR}:
        raise KeyFileError(f"{path} is not a gfedge key file (no {KEY_FORMAT} metadata or no single '{_TENSOR}' tensor)", "write keys with `gfedge train atlas --key-only`")
    missing = [k for k in ("name", "core_sha256", "dim") if not metadata.get(k)]
    if missing:
        raise KeyFileError(f"key file {path} lacks metadata {missing}", "re-train the key with `gfedge train atlas --key-only`; keys carry their name and core hash")
    raw = tensors[_TENSOR]
    if raw.dtype != np.float32 or raw.ndim != 1:
        raise KeyFileError(f"key file {path} holds a {raw.dtype} tensor of shape {list(raw.shape)}", "a key is one float32 vector; re-train it")
    if str(raw.shape[0]) != metadata["dim"]:
        raise KeyFileError(f"key file {path} says dim {metadata['dim'][:20]} but holds {raw.shape[0]} values", "re-train the key")
    if not np.isfinite(raw).all():
        raise KeyFileError(f"key file {path} holds {int((~np.isfinite(raw)).sum())} NaN or infinite values", "re-train the key")
    if not _NAME.fullmatch(metadata["name"]) or not _HEX64.fullmatch(metadata["core_sha256"]):
        raise KeyFileError(f"key file {path} has a malformed name or core hash in its metadata", "re-train the key")
    length = metadata.get("length")
    if length is not None and (not length.isdigit() or int(length) < 1 or len(length) > 12):
        raise KeyFileError(f"key file {path} has a malformed length {length[:20]!r} in its metadata", "re-train the key")
    return Key(name=metadata["name"], vector=raw.copy(), core_sha256=metadata["core_sha256"], family=metadata.get("family", ""),
               length=None if length is None else int(length))


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

