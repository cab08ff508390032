"""Atlas's export spec: a coordinate vector in, character logits out, the latent key as an input.

The key is a graph input, so switching texts binds another vector and rebuilds nothing. `x` stays
float32 through the Fourier features at fp16 (frequencies reach ~pi*N; fp16 cannot resolve that).
"""

from __future__ import annotations

from geofractal_edge.models.spec import DimRange, ExportSpec, TensorSpec

MAX_POSITIONS = 16384


def atlas_spec(*, key_dim: int, vocab_size: int) -> ExportSpec:
    return ExportSpec(
        family="atlas",
        inputs=(
            TensorSpec("x", "float32", ("n",), range=(0.0, 1.0), role="coordinates"),
            TensorSpec("key", "float32", (key_dim,), role="key"),
        ),
        outputs=(TensorSpec("logits", "float32", ("n", vocab_size), role="logits"),),
        dim_ranges={"n": DimRange(min=1, opt=2048, max=MAX_POSITIONS)},
        task_metric="char_accuracy",
        fp32_inputs=("x",),
    )
