"""What every family's checkpoint shares: safetensors read with its metadata, and config fields checked.

A checkpoint is one safetensors file: the state dict as tensors, the recipe (config JSON, format,
family, report) as string metadata. No pickle. Each family adds only what is its own: which
format/family it expects and how it rebuilds the model.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from geofractal_edge.errors import GfedgeError


def read_checkpoint(path: Path | str, *, family: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensors, metadata) of the checkpoint at `path`; a missing or unreadable file is a one-line error."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise GfedgeError(f"checkpoint {path} does not exist", f"check the path, or train one with `gfedge train {family}`")
    data = path.read_bytes()
    try:
        return load(data), _metadata(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise GfedgeError(f"checkpoint {path} is not a readable safetensors file ({exc})", f"re-train it with `gfedge train {family}`") from exc


def known_fields(cls: type, data: dict[str, Any], *, what: str) -> dict[str, Any]:
    """`data` if every key is a field of dataclass `cls`; unknown fields are refused so that typos surface."""
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise GfedgeError(f"unknown {what} config fields: {', '.join(unknown)}", "the checkpoint was written by a newer geofractal_edge; upgrade")
    return data


def _metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's ``__metadata__`` (safetensors.torch.load does not return it)."""
    import json

    if len(data) < 8:
        raise ValueError("file is shorter than a safetensors header")
    header_len = int.from_bytes(data[:8], "little")
    return dict(json.loads(data[8 : 8 + header_len]).get("__metadata__") or {})
