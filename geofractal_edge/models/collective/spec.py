"""The collective's export spec: digits pixels in, class logits and every router's top-K routes out.

`features` are raw digits values in [0, 16] (the graph divides by 16). `routes` are, per router,
sample and slot, the K slots it reads, in ascending order ([streams, batch, slots, K], int64; the
router axis first, as parity's route agreement wants); `margins` [streams, batch] the smallest gap
over slots between the K-th and (K+1)-th routing score, so that a disagreement can be called a
near-tie.

Tolerances: one held-out image is 100/450 = 0.22 accuracy points, so fp16 may not be held to the
default 0.1 points (one flipped near-tie would fail it); fp16 and int8 get 0.3, int4 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from geofractal_edge.models.family import Exportable
from geofractal_edge.models.spec import DimRange, ExportSpec, TensorSpec

MAX_BATCH = 1024
TOLERANCES = {"fp16": {"task_delta_max": 0.3}, "int8": {"task_delta_max": 0.3}, "int4": {"task_delta_max": 1.0}}


@dataclass
class CalibratedExportable(Exportable):
    """An Exportable whose int8 calibration reads its own feeds (training images, other
    sentences) instead of the golden cases, so scored inputs never set activation ranges."""

    calibration_feeds: list[dict[str, np.ndarray]] = field(default_factory=list)

    def calibration(self):
        return tuple(self.calibration_feeds) or super().calibration()


def collective_spec(*, input_dim: int, input_scale: float, num_classes: int, streams: int, slots: int, routes: int, embedding: bool = False,
                    bounded: bool = True) -> ExportSpec:
    """`embedding`: the input is a frozen encoder's L2-normalised sentence embedding [batch, input_dim],
    named like the encoder bundle's output so that the two chain by name. `bounded=False`: the user's own
    features, any finite value (the streams' arrays concatenated in order)."""
    data = (TensorSpec("sentence_embedding", "float32", ("batch", input_dim), range=(-1.0, 1.0), role="data") if embedding
            else TensorSpec("features", "float32", ("batch", input_dim), range=(0.0, float(input_scale)) if bounded else None, role="data"))
    return ExportSpec(
        family="collective",
        inputs=(data,),
        outputs=(
            TensorSpec("logits", "float32", ("batch", num_classes), role="logits"),
            TensorSpec("routes", "int64", (streams, "batch", slots, routes), role="routes"),
            TensorSpec("margins", "float32", (streams, "batch"), role="margins"),
        ),
        dim_ranges={"batch": DimRange(min=1, opt=64, max=MAX_BATCH)},
        task_metric="accuracy",
        tolerance_overrides=TOLERANCES,
        # int4 runs int8 activations (MatMulNBits accuracy_level 4) in blocks of 32. Measured on the 73 MB wide
        # collective against its fp32 (benchmarks/RESULTS.md, eighth session; `gfedge bench`, 1 / 2 threads, 60 runs):
        #   accuracy 0 (float arithmetic), blocks of 32: p50 x1.12 / x0.91 at batch 1, model memory x0.18 / x0.20;
        #   accuracy 4, blocks of 32: p50 x0.52 / x0.56 (batch 64: x0.99 / x1.05), model memory x0.25 / x0.26;
        #   accuracy 4, blocks of 64 / 128: p50 x0.51 / x0.47 (1 thread), model memory x0.21 / x0.22, but the
        #   towers' 288 inputs pad to 320 / 384: weight bytes x0.151 / x0.169 against x0.147, and the test
        #   fixture's small collective at blocks of 64 reads x0.203, over the 0.20 line.
        # Float arithmetic at one row costs what fp32 costs; int8 activations halve it for a few MiB of prepacked
        # data. Parity at blocks of 32: wide routes 0.984 (gate 0.97, 0.980 at accuracy 0), accuracy +0.22 points.
        int4_block_size=32,
        int4_accuracy_level=4,
        # On an AVX-512 Xeon the wide collective's blocks of 32 ran x1.31-1.32 of fp32 at 64 rows and blocks of 128
        # x1.13-1.17 (at batch 1: x0.60-0.67 and x0.54-0.62; routes and accuracy within the gates): export times both
        # on the export host and keeps the faster, where its weights grow by at most x1.20 (export/int4_choice.py).
        int4_alternatives=((128, 4),),
    )
