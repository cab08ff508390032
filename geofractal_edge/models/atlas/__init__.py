"""Atlas: a text stored as a function from position to character, one latent key per text.

Public API: `AtlasConfig`, `AtlasCore`, `AtlasLibrary`, the data helpers, `train_library`,
`train_key`, `char_accuracy`, and safetensors checkpoints (`save_checkpoint`, `load_checkpoint`,
`core_sha256`).
"""

from geofractal_edge.models.atlas.checkpoint import CHECKPOINT_FORMAT, FAMILY, core_sha256, load_checkpoint, save_checkpoint
from geofractal_edge.models.atlas.config import AtlasConfig
from geofractal_edge.models.atlas.data import build_vocab, coordinates, decode, default_texts, encode, held_out_texts
from geofractal_edge.models.atlas.modules import AtlasCore, AtlasLibrary
from geofractal_edge.models.atlas.train import char_accuracy, train_key, train_library

__all__ = [
    "CHECKPOINT_FORMAT",
    "FAMILY",
    "AtlasConfig",
    "AtlasCore",
    "AtlasLibrary",
    "build_vocab",
    "char_accuracy",
    "coordinates",
    "core_sha256",
    "decode",
    "default_texts",
    "encode",
    "held_out_texts",
    "load_checkpoint",
    "save_checkpoint",
    "train_key",
    "train_library",
]
