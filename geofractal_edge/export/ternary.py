"""Take ternary weights out of the graph and store them 2-bit packed (4 per byte).

The graph keeps each ternary initializer's name, type and shape, marked as external data; the
runtime unpacks the codes and hands them to onnxruntime at session creation. So the bundle holds
the codes once, at 2 bits each, whatever the precision of the rest of the graph.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from geofractal_edge.artifacts.ternary import pack_ternary
from geofractal_edge.errors import Bug

TERNARY_FILE = "weights/ternary.safetensors"


def externalize_ternary(model: onnx.ModelProto, names: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict]:
    """Mark the named initializers external; return their packed codes and the manifest section."""
    inits = {init.name: init for init in model.graph.initializer}
    packed, tensors = {}, {}
    for name in names:
        if name not in inits:
            raise Bug(f"ternary tensor {name} is not an initializer of the exported graph")
        init = inits[name]
        values = numpy_helper.to_array(init)
        if not np.isin(values, (-1, 0, 1)).all():
            raise Bug(f"ternary tensor {name} holds values other than -1, 0, +1")
        packed[name] = pack_ternary(values.astype(np.int8))
        tensors[name] = {"shape": list(values.shape), "dtype": values.dtype.name, "fp32_bytes": int(values.size * 4)}
        _mark_external(init, nbytes=values.nbytes)
    return packed, {"file": TERNARY_FILE, "tensors": tensors}


def _mark_external(init: TensorProto, *, nbytes: int) -> None:
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
        init.ClearField(field)
    init.data_location = TensorProto.EXTERNAL
    del init.external_data[:]
    for key, value in (("location", TERNARY_FILE), ("offset", "0"), ("length", str(nbytes))):
        entry = init.external_data.add()
        entry.key, entry.value = key, value
