"""GeoFractal router collective: streams that see the data differently, one router each (fingerprint,
Cantor-prior attention, top-K routes, anchors), a mailbox, adaptive fusion and a classifier.

Public API: `CollectiveConfig`, `StreamConfig`, `RouterCollective`, `train_collective`, `fit`,
`accuracy`, `lower` / `WideCollective` (the export form), safetensors checkpoints
(`save_checkpoint`, `load_checkpoint`), the digits split (`digits_split`), and the frozen-encoder
port (`geofractal_edge.models.collective.encoder`, loaded on demand: it imports transformers).
"""

from geofractal_edge.models.collective.checkpoint import CHECKPOINT_FORMAT, FAMILY, collective_sha256, load_checkpoint, save_checkpoint
from geofractal_edge.models.collective.collective import RouterCollective
from geofractal_edge.models.collective.config import CollectiveConfig, StreamConfig
from geofractal_edge.models.collective.data import DigitsSplit, digits_split
from geofractal_edge.models.collective.lowering import WideCollective, lower
from geofractal_edge.models.collective.train import accuracy, fit, train_collective

__all__ = [
    "CHECKPOINT_FORMAT",
    "FAMILY",
    "CollectiveConfig",
    "DigitsSplit",
    "RouterCollective",
    "StreamConfig",
    "WideCollective",
    "accuracy",
    "collective_sha256",
    "digits_split",
    "fit",
    "load_checkpoint",
    "lower",
    "save_checkpoint",
    "train_collective",
]
