"""TriX LM's export spec: token windows in; logits, per-layer routes and route margins out.

Routes and margins are outputs so that parity compares routing decisions on their own. The ternary
tile codes of every layer are stored 2-bit packed; the scales stay in the graph.
"""

from __future__ import annotations

from geofractal_edge.models.spec import DimRange, ExportSpec, TensorSpec

MAX_BATCH = 256
# gather_by_route copies each token's tile as float32 ([N, d_hidden, d_model] per projection): the declared
# batch range stops where one such copy would pass this many bytes. A 64-tile model of 256 x 256 tiles
# checked at 256 windows (4.3 GB per gather) was OOM-killed at 12.8 GB (benchmarks/RESULTS.md, wide TriX).
GATHER_BYTES = 1 << 30
# Precisions whose 2-bit tiles may run onnxruntime's lookup-table kernel (int8 activations) on "ort" targets, under
# dispatch_by_route only: their activations are int8 anyway, and fp32 keeps the exact kernel
# (ExportSpec.lut_gemm_precisions). Export keeps the kernel only where the export host measures it clearly faster at
# the bundle's worst batch against fp32 (export/lut_choice.py): on the 64-tile model's dispatch bundles int8 ran x0.32
# of fp32 at batch 1 (x0.59 at 16 windows) with it on an AMD EPYC, but on an AVX-512 Xeon x0.63-0.72 at batch 1 and x1.09-1.20 at 16
# windows, against x0.87-0.88 and x0.83-0.91 without it (benchmarks/RESULTS.md). On the shipped default (compute_all_select,
# one MatMulNBits over all tiles) the kernel ran int8 x0.76 of fp32 at batch 1 but x1.13 at 16 windows (x0.87
# without it), int4 x1.28 at 16, so compute-all bundles do not ask for it.
LUT_PRECISIONS = ("int8", "int4")


def max_batch(*, context: int, d_model: int, d_hidden: int, lowering: str) -> int:
    """The batch (windows) a bundle declares: MAX_BATCH, or fewer where one tile gather would pass GATHER_BYTES."""
    if lowering != "gather_by_route":
        return MAX_BATCH
    per_window = context * d_model * d_hidden * 4
    return max(1, min(MAX_BATCH, GATHER_BYTES // per_window))


def trix_spec(*, vocab_size: int, context: int, n_layers: int, batch_max: int = MAX_BATCH, lowering: str = "gather_by_route") -> ExportSpec:
    ternary = tuple((f"blocks.{i}.ffn.{w}_q", f"blocks.{i}.ffn.{w}_scale") for i in range(n_layers) for w in ("up", "down"))
    return ExportSpec(
        family="trix",
        inputs=(TensorSpec("tokens", "int64", ("batch", context), range=(0, vocab_size - 1), role="tokens"),),
        outputs=(
            TensorSpec("logits", "float32", ("batch", context, vocab_size), role="logits"),
            TensorSpec("routes", "int64", (n_layers, "batch", context), role="routes"),
            TensorSpec("margins", "float32", (n_layers, "batch", context), role="margins"),
        ),
        dim_ranges={"batch": DimRange(min=1, opt=min(16, batch_max), max=batch_max)},
        task_metric="char_accuracy",
        ternary=ternary,
        # Routing scores stay float at every precision: quantization noise flips near-tie routes.
        keep_float=tuple(f"blocks.{i}.ffn.{t}" for i in range(n_layers)
                         for t in ("signatures", "cluster_signatures", "cluster_member_signatures")),
        # int4 keeps the weights before every router (embeddings, attention) at 8 bits: all-4-bit moved
        # 4.3% of the test model's layer-0 routes (gate: 3%); the head and the ternary tiles stay 4- and 2-bit.
        # On host-cpu those 8-bit weights take the int8 bundles' dynamic form (Int4Config.int8_form): as MatMulNBits
        # bits 8 they held the wide model's int4 at x1.21-1.42 of fp32 at 16 windows on an AVX-512 Xeon (four runs).
        int8_upstream_of=("routes",),
        # The 4-bit head on onnxruntime computes with int8 activations (MatMulNBits accuracy_level 4): float
        # arithmetic ran int4 at x1.12 of fp32 (shipped default) and x1.15 (64-tile wide model) at batch 1, 1 thread;
        # this x1.01 and x0.93, routes 0.998 / 0.997, char accuracy within 0.4 points (benchmarks/RESULTS.md).
        int4_accuracy_level=4,
        # Acceptance gates of the TriX issue where routes agree: SQNR >= 40 dB at fp32, >= 20 dB at int8.
        tolerance_overrides={"fp32": {"sqnr_db_min": 40.0}, "int8": {"sqnr_db_min": 20.0}},
        lut_gemm_precisions=LUT_PRECISIONS if lowering == "dispatch_by_route" else (),
    )
