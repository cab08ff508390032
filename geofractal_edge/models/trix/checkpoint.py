"""Save and load a TrixLM as one .safetensors file: tensors plus JSON metadata, never pickle.

The metadata holds the format tag, the FFN kind ("trix" or "dense") and the whole `TrixConfig`, so
the file alone rebuilds the model. The latent float weights are stored (training can resume, and
the ternary codes are re-derived exactly); hierarchical routing's cluster grouping is stored too,
because re-clustering is deterministic but the grouping is part of what was trained and measured.
Per-tile usage counters are runtime statistics and are not stored.
"""

from __future__ import annotations

import json
from pathlib import Path

from geofractal_edge.artifacts.atomic import write_bytes
from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.checkpoint_io import read_checkpoint
from geofractal_edge.models.trix.config import TrixConfig
from geofractal_edge.models.trix.lm import TrixLM

FORMAT = "gfedge-trix-lm"
VERSION = 1


def checkpoint_bytes(model: TrixLM, *, report: dict | None = None) -> bytes:
    """The .safetensors bytes of `model`; `report` (JSON-able) is kept in the metadata for provenance."""
    from safetensors.torch import save

    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    metadata = {"format": FORMAT, "version": str(VERSION), "ffn": model.ffn_kind, "config": json.dumps(model.config.to_dict(), sort_keys=True)}
    if report is not None:
        metadata["report"] = json.dumps(report, sort_keys=True, default=str)
    return save(tensors, metadata=metadata)


def save_checkpoint(path: Path, model: TrixLM, *, report: dict | None = None) -> None:
    """Write `model` to `path` atomically (a reader never sees half a file)."""
    write_bytes(Path(path), checkpoint_bytes(model, report=report))


def load_checkpoint(path: Path) -> TrixLM:
    """Rebuild the model saved at `path`, in eval mode."""
    tensors, metadata = read_checkpoint(path, family="trix")
    if metadata.get("format") != FORMAT:
        raise GfedgeError(f"{path} is not a TriX LM checkpoint (format {metadata.get('format')!r})", "pass a checkpoint written by geofractal_edge.models.trix.checkpoint")
    if int(metadata.get("version", "0")) > VERSION:
        raise GfedgeError(f"{path} has checkpoint version {metadata['version']}, this build reads up to {VERSION}", "upgrade geofractal_edge")
    config = TrixConfig.from_dict(json.loads(metadata["config"]))
    model = TrixLM(config, ffn=metadata.get("ffn", "trix"))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise GfedgeError(f"{path} does not match its own config: {exc}".splitlines()[0], "the file is damaged; re-save it") from exc
    return model.eval()
