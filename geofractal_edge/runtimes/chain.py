"""An encoder bundle in front of a collective bundle: checked by hash, run as one model. No torch.

A collective of frozen-encoder streams is exported without its encoder: its graph takes the
encoder's `sentence_embedding`, and its manifest names the encoder by the sha256 of its weights
(`task.encoder.core_sha256`). The encoder is exported as its own bundle (`gfedge export --family
collective-encoder`), whose `model.core_sha256` is that same hash. `load_chain` opens both, refuses
an encoder that is not the one the collective was trained on, and runs tokens -> embedding -> logits.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.artifacts.links import check_encoder
from geofractal_edge.artifacts.manifest import EncoderLink
from geofractal_edge.backends.onnxruntime import Session


class Chain:
    """encoder Session -> collective Session; `run` takes the encoder's inputs (token ids and mask)."""

    def __init__(self, encoder: Session, collective: Session, link: EncoderLink) -> None:
        self.encoder, self.collective, self.link = encoder, collective, link

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Encoder outputs and collective outputs in one mapping (the embedding included)."""
        encoded = self.encoder.run(inputs)
        return {**encoded, **self.collective.run({self.link.output: encoded[self.link.output]})}


def load_chain(collective: Path | str, encoder: Path | str, **options) -> Chain:
    """Open both bundles (every hash checked), check the link, load both sessions."""
    collective_bundle, encoder_bundle = open_bundle(Path(collective)), open_bundle(Path(encoder))
    link = check_encoder(collective_bundle, encoder_bundle)
    return Chain(Session(encoder_bundle, **options), Session(collective_bundle, **options), link)
