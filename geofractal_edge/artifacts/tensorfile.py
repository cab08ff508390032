"""Read safetensors bytes with their metadata (numpy only; safetensors' numpy API drops metadata)."""

from __future__ import annotations

import json

import numpy as np
from safetensors.numpy import load


def load_with_metadata(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    tensors = load(data)
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    return tensors, dict(header.get("__metadata__") or {})
