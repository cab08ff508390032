"""Write a Triton Inference Server model repository from bundles, for users who serve on a fleet.

One Triton model per bundle: `<repo>/<model>/config.pbtxt` and `<repo>/<model>/1/model.onnx`
(onnxruntime backend; packed ternary weights filled back into the graph, since Triton reads one
self-contained file), plus the bundle's keys under `<model>/keys/` and its manifest beside them
(Triton ignores non-numeric folders and extra files). Routed models' diagnostic outputs are
transposed batch-major in the served graph (`served`), so that Triton can batch them; the configs
are tritonclient's ModelConfig protobuf (`config`). Given several bundles whose outputs feed later
inputs by name, an ensemble wires them; `write_served` is what `gfedge export --format triton` writes.
"""

from geofractal_edge.export.triton.config import TYPES, TritonModel, ensemble_config, triton_model
from geofractal_edge.export.triton.repository import TritonRepository, check_encoder, check_name, default_name, write_repository, write_served
from geofractal_edge.export.triton.served import BATCH, ServedGraph, batch_dim, served_graph

__all__ = [
    "BATCH", "TYPES", "ServedGraph", "TritonModel", "TritonRepository", "batch_dim", "check_encoder", "check_name", "default_name",
    "ensemble_config", "served_graph", "triton_model", "write_repository", "write_served",
]
