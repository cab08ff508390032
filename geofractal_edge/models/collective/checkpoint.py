"""Collective checkpoints: one safetensors file, state dict tensors plus JSON metadata.

safetensors only (no pickle). Metadata carries the format, the family, the config as JSON, the
training report and, for frozen streams, the encoder each wraps (folder and the sha256 of its
weights): frozen encoder weights are not copied into the checkpoint, they are checked on load.
A collective trained on the user's arrays also stores what export measures on: the held-out rows
and up to `CALIBRATION_ROWS` training rows, as tensors under `data.` (outside the state dict).
Written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save as st_save

from geofractal_edge.artifacts import atomic
from geofractal_edge.artifacts.hashing import arrays_sha256
from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.collective.collective import RouterCollective
from geofractal_edge.models.collective.config import CollectiveConfig
from geofractal_edge.models.collective.streams import FrozenStream
from geofractal_edge.models.checkpoint_io import read_checkpoint

CHECKPOINT_FORMAT = "gfedge-ckpt/1"
FAMILY = "collective"
DATA = "data."  # tensors that are export's data, not weights
CALIBRATION_ROWS = 256
HELD_OUT_ROWS = 1024


def save_checkpoint(path: Path, collective: RouterCollective, *, report: dict | None = None, data=None) -> None:
    """Write `collective` (and its training report) to `path`, atomically; `data` (a DigitsSplit of the
    user's arrays): its held-out rows and first training rows are stored for export."""
    tensors = {name: value.detach().cpu().contiguous() for name, value in collective.state_dict().items()}
    if data is not None:
        stored = {"x_test": data.x_test[:HELD_OUT_ROWS], "y_test": data.y_test[:HELD_OUT_ROWS], "x_calibration": data.x_train[:CALIBRATION_ROWS]}
        tensors.update({DATA + name: value.contiguous() for name, value in stored.items()})
    ports = {name: {"folder": str(s.port.folder), "sha256": s.port.sha256} for name, s in collective.streams.items() if isinstance(s, FrozenStream)}
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "family": FAMILY,
        "config": json.dumps(collective.config.to_dict()),
        "report": json.dumps(report or {}),
        "ports": json.dumps(ports),
    }
    atomic.write_bytes(Path(path), st_save(tensors, metadata=metadata))


def load_checkpoint(path: Path) -> tuple[RouterCollective, dict]:
    """Read a checkpoint written by `save_checkpoint`: (collective in eval mode, training report).

    Any missing, truncated or foreign file is a `GfedgeError` naming the file and the fix.
    """
    tensors, metadata = read_checkpoint(path, family=FAMILY)
    tensors = {name: value for name, value in tensors.items() if not name.startswith(DATA)}
    if metadata.get("format") != CHECKPOINT_FORMAT or metadata.get("family") != FAMILY:
        raise GfedgeError(f"{path} is not a collective checkpoint (format {metadata.get('format')!r}, family {metadata.get('family')!r})", "pass a checkpoint written by `gfedge train collective`")
    try:
        config = CollectiveConfig.from_dict(json.loads(metadata["config"]))
        collective = RouterCollective(config, ports=_ports(json.loads(metadata.get("ports", "{}"))))
        collective.load_state_dict(tensors, strict=True)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise GfedgeError(f"checkpoint {path} is incomplete or inconsistent ({str(exc).splitlines()[0]})", "re-train it with `gfedge train collective`") from exc
    return collective.eval(), json.loads(metadata.get("report", "{}"))


def load_data(path: Path) -> dict | None:
    """The export data stored with a collective trained on user arrays ({x_test, y_test, x_calibration}), else None."""
    tensors, _ = read_checkpoint(path, family=FAMILY)
    data = {name[len(DATA):]: value for name, value in tensors.items() if name.startswith(DATA)}
    return data or None


def collective_sha256(collective: RouterCollective) -> str:
    """Identity of a trained collective: the hash of its state dict as float32 arrays."""
    return arrays_sha256({name: t.detach().cpu().float().numpy() for name, t in collective.state_dict().items()})


def _ports(entries: dict) -> dict:
    """Reload each frozen stream's encoder and refuse one whose weights changed."""
    if not entries:
        return {}
    from geofractal_edge.models.collective.encoder import TextPort

    ports = {}
    for name, entry in entries.items():
        port = TextPort.load(entry["folder"])
        if port.sha256 != entry["sha256"]:
            raise GfedgeError(f"the encoder in {entry['folder']} is not the one stream '{name}' was trained with (sha256 differs)", "point the checkpoint at the original encoder folder, or re-train")
        ports[name] = port
    return ports

