"""Run an exported graph on shapes it was not traced with, next to torch, before it is bundled."""

from __future__ import annotations

import numpy as np
import onnx

from geofractal_edge.backends.lazy import require
from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.family import Exportable


def sample_inputs(exportable: Exportable, *, use: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs at the min/opt/max of every dynamic dimension, drawn within each input's range."""
    rng = np.random.default_rng(seed)
    spec = exportable.spec
    feeds = {}
    for tensor in spec.inputs:
        if tensor.role == "key":
            feeds[tensor.name] = next(iter(exportable.keys.values()))
            continue
        shape = spec.validation_shape(tensor, use=use)
        low, high = tensor.range or (-1.0, 1.0)
        feeds[tensor.name] = rng.uniform(low, high, size=shape).astype(tensor.dtype)
    return feeds


def check_shapes(model: onnx.ModelProto, exportable: Exportable) -> None:
    """The exported graph must run at the spec's min and max shapes and agree with torch's shapes."""
    ort = require("onnxruntime")
    torch = require("torch")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for use in ("min", "max"):
        feeds = sample_inputs(exportable, use=use)
        got = session.run(None, feeds)
        with torch.no_grad():
            want = exportable.module(*(torch.from_numpy(feeds[t.name]) for t in exportable.spec.inputs))
        want = want if isinstance(want, (tuple, list)) else (want,)
        for name, g, w in zip((t.name for t in exportable.spec.outputs), got, want):
            if tuple(g.shape) != tuple(w.shape):
                raise GfedgeError(
                    f"exported graph gives {name} shape {list(g.shape)} at the {use} shapes, torch gives {list(w.shape)}",
                    "this is a bug in the family's export lowering; report it",
                )
