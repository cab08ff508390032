"""Atlas checkpoints: one safetensors file holding a library and the texts it was trained on.

safetensors only (no pickle): tensors are the core's state dict under ``core.``, the keys under
``keys`` and each text as int32 token ids under ``text.<name>``; metadata (strings) carries the
format, the family, the config as JSON and the key names as JSON. Written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from geofractal_edge.artifacts import atomic
from geofractal_edge.artifacts.hashing import arrays_sha256
from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.atlas.config import AtlasConfig
from geofractal_edge.models.atlas.data import decode, encode
from geofractal_edge.models.atlas.modules import AtlasCore, AtlasLibrary
from geofractal_edge.models.checkpoint_io import read_checkpoint

CHECKPOINT_FORMAT = "gfedge-ckpt/1"
FAMILY = "atlas"
_CORE = "core."
_KEYS = "keys"
_TEXT = "text."


def save_checkpoint(path: Path, library: AtlasLibrary, texts: dict[str, str]) -> None:
    """Write `library` and its `texts` (one per key name) to `path`, atomically."""
    missing = [name for name in library.names if name not in texts]
    if missing:
        raise GfedgeError(f"no text given for key(s) {', '.join(missing)}", "pass the texts the library was trained on")
    vocab = library.config.vocab
    tensors = {f"{_CORE}{name}": value.detach().cpu().contiguous() for name, value in library.core.state_dict().items()}
    tensors[_KEYS] = library.keys.detach().cpu().float().contiguous()
    for name in library.names:
        tensors[f"{_TEXT}{name}"] = encode(texts[name], vocab).to(torch.int32)
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "family": FAMILY,
        "config": json.dumps(library.config.to_dict(), ensure_ascii=False),
        "names": json.dumps(library.names, ensure_ascii=False),
    }
    atomic.write_bytes(Path(path), st_save(tensors, metadata=metadata))


def load_checkpoint(path: Path) -> tuple[AtlasLibrary, dict[str, str]]:
    """Read a checkpoint written by `save_checkpoint`; the library comes back in eval mode.

    Any missing, truncated or foreign file is a `GfedgeError` naming the file and the fix.
    """
    tensors, metadata = read_checkpoint(path, family=FAMILY)
    if metadata.get("format") != CHECKPOINT_FORMAT or metadata.get("family") != FAMILY:
        raise GfedgeError(f"{path} is not an Atlas checkpoint (format {metadata.get('format')!r}, family {metadata.get('family')!r})", "pass a checkpoint written by `gfedge train atlas`")
    try:
        return _rebuild(tensors, metadata)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
        raise GfedgeError(f"checkpoint {path} is incomplete or inconsistent ({exc})", "re-train it with `gfedge train atlas`") from exc


def core_sha256(core: AtlasCore) -> str:
    """Identity of a frozen core: the hash of its state dict as float32 arrays (keys refer to it)."""
    return arrays_sha256({name: tensor.detach().cpu().float().numpy() for name, tensor in core.state_dict().items()})


def _rebuild(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[AtlasLibrary, dict[str, str]]:
    config = AtlasConfig.from_dict(json.loads(metadata["config"]))
    names = json.loads(metadata["names"])
    with torch.random.fork_rng(devices=[]):  # the throw-away initial weights must not move the caller's RNG
        library = AtlasLibrary(config, names)
    state = {name[len(_CORE) :]: value for name, value in tensors.items() if name.startswith(_CORE)}
    library.core.load_state_dict(state, strict=True)
    keys = tensors[_KEYS]
    if tuple(keys.shape) != (len(names), config.key_dim):
        raise ValueError(f"keys have shape {tuple(keys.shape)}, expected {(len(names), config.key_dim)}")
    with torch.no_grad():
        library.keys.copy_(keys)
    texts = {name: _decode_text(tensors[f"{_TEXT}{name}"], config.vocab) for name in names}
    library.eval()
    return library, texts


def _decode_text(ids: torch.Tensor, vocab: str) -> str:
    if ids.dim() != 1 or (ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(vocab))):
        raise ValueError(f"a stored text has token ids outside the vocabulary of {len(vocab)} characters")
    return decode(ids.tolist(), vocab)

