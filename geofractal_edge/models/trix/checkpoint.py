"""Save and load a TrixLM as one .safetensors file: tensors plus JSON metadata, never pickle.

The metadata holds the format tag, the FFN kind ("trix" or "dense") and the whole `TrixConfig`, so
the file alone rebuilds the model. The latent float weights are stored (training can resume, and
the ternary codes are re-derived exactly); hierarchical routing's cluster grouping is stored too,
because re-clustering is deterministic but the grouping is part of what was trained and measured.
Per-tile usage counters are runtime statistics and are not stored.

The training text is recorded too (metadata "text"): its sha256, its length and a bounded head of its
held-out split (at most `MAX_TEXT_BYTES`), from which export builds golden cases and int8
calibration, so a model trained on the user's text is measured on that text. Checkpoints written
before this carry no "text" and export from the pydoc corpus, as they always did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from geofractal_edge.artifacts.atomic import write_bytes
from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.checkpoint_io import read_checkpoint
from geofractal_edge.models.trix.config import TrixConfig
from geofractal_edge.models.trix.data import held_out_head, split, text_sha256
from geofractal_edge.models.trix.lm import TrixLM

FORMAT = "gfedge-trix-lm"
VERSION = 1  # the "text" record is optional metadata: older readers ignore it, so the version stays
MAX_TEXT_BYTES = 64 * 1024  # the stored held-out head, UTF-8
TEXT_WINDOWS = 64  # held-out windows stored: export's golden windows (family.GOLDEN_WINDOWS)


@dataclass(frozen=True)
class TextRecord:
    """What a checkpoint keeps of its training text: its identity and the held-out head export measures on."""

    sha256: str
    chars: int
    held_out: str

    @classmethod
    def of(cls, text: str, config: TrixConfig) -> TextRecord:
        _, held = split(text, config.held_out_fraction)
        head = held_out_head(held, context=config.context, windows=TEXT_WINDOWS, max_bytes=MAX_TEXT_BYTES)
        return cls(sha256=text_sha256(text), chars=len(text), held_out=head)


def checkpoint_bytes(model: TrixLM, *, report: dict | None = None, text: str | None = None) -> bytes:
    """The .safetensors bytes of `model`; `report` (JSON-able) is kept in the metadata for provenance,
    `text` (the training text) as its `TextRecord`."""
    from safetensors.torch import save

    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    metadata = {"format": FORMAT, "version": str(VERSION), "ffn": model.ffn_kind, "config": json.dumps(model.config.to_dict(), sort_keys=True)}
    if report is not None:
        metadata["report"] = json.dumps(report, sort_keys=True, default=str)
    if text is not None:
        record = TextRecord.of(text, model.config)
        metadata["text"] = json.dumps({"sha256": record.sha256, "chars": record.chars, "held_out": record.held_out}, sort_keys=True)
    return save(tensors, metadata=metadata)


def save_checkpoint(path: Path, model: TrixLM, *, report: dict | None = None, text: str | None = None) -> None:
    """Write `model` (and the record of its training `text`) to `path` atomically (a reader never sees half a file)."""
    write_bytes(Path(path), checkpoint_bytes(model, report=report, text=text))


def load_checkpoint(path: Path) -> TrixLM:
    """Rebuild the model saved at `path`, in eval mode."""
    return load_with_text(path)[0]


def load_with_text(path: Path) -> tuple[TrixLM, TextRecord | None]:
    """(the model saved at `path` in eval mode, the record of its training text or None for older checkpoints)."""
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
    return model.eval(), _text_record(path, metadata.get("text"))


def _text_record(path: Path, raw: str | None) -> TextRecord | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return TextRecord(sha256=str(data["sha256"]), chars=int(data["chars"]), held_out=str(data["held_out"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise GfedgeError(f"{path} has an unreadable training-text record ({exc})", "the file is damaged; re-train it") from exc
