"""Which bundle may run in front of which: the encoder -> collective link, read from manifests only.

A collective of frozen-encoder streams names its encoder by the sha256 of its weights
(`task.encoder`); the encoder bundle's `model.core_sha256` must be that hash, and its output must be
the collective's one input. `gfedge run --encoder` and Triton ensembles apply the same rule.
"""

from __future__ import annotations

from geofractal_edge.artifacts.bundle import Bundle
from geofractal_edge.artifacts.manifest import EncoderLink
from geofractal_edge.errors import BundleError


def check_encoder(collective: Bundle, encoder: Bundle) -> EncoderLink:
    """The link, after checking that `encoder` is the bundle of the encoder `collective` was trained on."""
    link = collective.manifest.task.encoder
    if link is None:
        raise BundleError(f"bundle {collective.path.name} takes no encoder in front of it", "run or serve it on its own")
    model = encoder.manifest.model
    if encoder.manifest.family != link.family or model.core_sha256 != link.core_sha256:
        raise BundleError(
            f"{encoder.path.name} is not the encoder {collective.path.name} was trained with "
            f"(family {encoder.manifest.family}, weights sha256 {model.core_sha256[:12]}; wanted {link.family}, {link.core_sha256[:12]})",
            f"export that encoder with `gfedge export --family {link.family} --model WEIGHTS` (WEIGHTS: its weights file in {link.folder or 'its folder'}; none for the bundled MiniLM) and pass that bundle",
        )
    wanted = [t.name for t in collective.manifest.inputs]
    if link.output not in encoder.manifest.graph.output_names or wanted != [link.output]:
        raise BundleError(f"{encoder.path.name} has no output '{link.output}' for {collective.path.name}'s input {wanted}", "re-export both bundles with this version")
    return link
