"""TriX LM's export spec: token windows in; logits, per-layer routes and route margins out.

Routes and margins are outputs so that parity compares routing decisions on their own. The ternary
tile codes of every layer are stored 2-bit packed; the scales stay in the graph.
"""

from __future__ import annotations

from geofractal_edge.models.spec import DimRange, ExportSpec, TensorSpec

MAX_BATCH = 256


def trix_spec(*, vocab_size: int, context: int, n_layers: int) -> ExportSpec:
    ternary = tuple((f"blocks.{i}.ffn.{w}_q", f"blocks.{i}.ffn.{w}_scale") for i in range(n_layers) for w in ("up", "down"))
    return ExportSpec(
        family="trix",
        inputs=(TensorSpec("tokens", "int64", ("batch", context), range=(0, vocab_size - 1), role="tokens"),),
        outputs=(
            TensorSpec("logits", "float32", ("batch", context, vocab_size), role="logits"),
            TensorSpec("routes", "int64", (n_layers, "batch", context), role="routes"),
            TensorSpec("margins", "float32", (n_layers, "batch", context), role="margins"),
        ),
        dim_ranges={"batch": DimRange(min=1, opt=16, max=MAX_BATCH)},
        task_metric="char_accuracy",
        ternary=ternary,
        # Routing scores stay float at every precision: quantization noise flips near-tie routes.
        keep_float=tuple(f"blocks.{i}.ffn.{t}" for i in range(n_layers)
                         for t in ("signatures", "cluster_signatures", "cluster_member_signatures")),
        # int4 keeps the weights before every router (embeddings, attention) at 8 bits: all-4-bit moved
        # 4.3% of the test model's layer-0 routes (gate: 3%); the head and the ternary tiles stay 4- and 2-bit.
        int8_upstream_of=("routes",),
        # Acceptance gates of the TriX issue where routes agree: SQNR >= 40 dB at fp32, >= 20 dB at int8.
        tolerance_overrides={"fp32": {"sqnr_db_min": 40.0}, "int8": {"sqnr_db_min": 20.0}},
    )
