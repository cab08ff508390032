"""TriX: a transformer FFN of ternary tiles routed by signatures read from their own weights (torch side).

Modules (all but `config` import torch):

* `config`     TrixConfig, the whole recipe of a model and its training
* `ternary`    straight-through ternary quantiser, per-tile absmean scale, exact int8 codes
* `ffn`        TrixFFN: signatures, flat and hierarchical routing, soft (training) and hard paths
* `cluster`    deterministic capacity-limited k-means of signatures, 2-level routing tables
* `lm`         TrixLM: a small character LM with TriX or dense (same active parameters) FFNs
* `data`       the pydoc corpus, a positional held-out split, batches
* `train`      train_lm(config, ffn=..., steps=..., seed=...) -> (model, report with held-out bits/char)
* `checkpoint` safetensors + JSON metadata, no pickle
* `lowering`   hard routing for export (compute_all_select, gather_by_route, group_by_route,
  dispatch_by_route) and ExportableTrixLM
"""

from geofractal_edge.models.trix.config import TrixConfig

__all__ = ["TrixConfig"]
