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

from geofractal_edge.artifacts import Bundle, open_bundle
from geofractal_edge.artifacts.manifest import EncoderLink
from geofractal_edge.errors import BundleError
from geofractal_edge.backends.onnxruntime import Session


def encoder_link(collective: Bundle) -> EncoderLink | None:
    """The encoder a collective bundle names (`family`, `core_sha256`, `output`), or None."""
    return collective.manifest.task.encoder


def check_encoder(collective: Bundle, encoder: Bundle) -> EncoderLink:
    """The link, after checking that `encoder` is the bundle of the encoder `collective` was trained on."""
    link = encoder_link(collective)
    if link is None:
        raise BundleError(f"bundle {collective.path.name} takes no encoder in front of it", "run it on its own with `gfedge run`")
    model = encoder.manifest.model
    if encoder.manifest.family != link.family or model.core_sha256 != link.core_sha256:
        raise BundleError(
            f"{encoder.path.name} is not the encoder {collective.path.name} was trained with "
            f"(family {encoder.manifest.family}, weights sha256 {model.core_sha256[:12]}; wanted {link.family}, {link.core_sha256[:12]})",
            f"export that encoder with `gfedge export --family {link.family} --model WEIGHTS` (WEIGHTS: its weights file in {link.folder or 'its folder'}; none for the bundled MiniLM) and pass that bundle",
        )
    wanted = [t.name for t in collective.manifest.inputs]
    if link.output not in {t.name for t in encoder.manifest.outputs} or wanted != [link.output]:
        raise BundleError(f"{encoder.path.name} has no output '{link.output}' for {collective.path.name}'s input {wanted}", "re-export both bundles with this version")
    return link


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
