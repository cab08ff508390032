"""Host-side parity against the live torch model, on inputs that are not the golden ones."""

import numpy as np
import pytest
import torch

from geofractal_edge.parity.stats import error_stats
from geofractal_edge.runtimes import load

LIMITS = {"fp32": 60.0, "fp16": 20.0, "int8": 15.0, "int4": 8.0}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "int4"])
def test_runtime_matches_live_torch_on_fresh_coordinates(bundle_factory, tiny_checkpoint, precision):
    from geofractal_edge.models.atlas.checkpoint import load_checkpoint

    library, texts = load_checkpoint(tiny_checkpoint)
    library.eval()
    session = load(bundle_factory(precision))
    for name in library.names:
        # A random subset of the text's character positions: a shape neither traced nor golden.
        # (Between two characters the model's answer is a near-tie by construction; not a parity test.)
        n = len(texts[name])
        x = (np.sort(np.random.default_rng(7).choice(n, size=177, replace=False)) / (n - 1)).astype(np.float32)
        with torch.no_grad():
            want = library.core(torch.from_numpy(x), library.key(name)).numpy()
        got = session.run({"x": x}, key=name)["logits"]
        stats = error_stats(want, got)
        assert stats["sqnr_db"] >= LIMITS[precision], (name, stats)
        agree = float((want.argmax(-1) == got.argmax(-1)).mean())
        assert agree >= (1.0 if precision == "fp32" else 0.98), (name, agree)
