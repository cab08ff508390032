"""Trace a family's torch module to ONNX with the dynamic dimensions its export spec names."""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from geofractal_edge.artifacts.hashing import arrays_sha256, canonical_sha256
from geofractal_edge.backends.lazy import require
from geofractal_edge.errors import GfedgeError
from geofractal_edge.export.quiet import quiet
from geofractal_edge.models.family import Exportable


def trace(exportable: Exportable) -> onnx.ModelProto:
    """torch -> ONNX (torch.export based exporter). The module's forward takes the spec inputs in order."""
    torch = require("torch")
    spec = exportable.spec
    module = exportable.module.eval()
    feeds = exportable.feeds(exportable.cases[0])
    args = tuple(torch.from_numpy(feeds[t.name]) for t in spec.inputs)
    dims = {name: torch.export.Dim(name, min=1, max=max(2, r.max)) for name, r in spec.dim_ranges.items()}
    dynamic = {t.name: {a: dims[d] for a, d in enumerate(t.shape) if isinstance(d, str)} or None for t in spec.inputs}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "model.onnx")
        try:
            with contextlib.redirect_stdout(io.StringIO()), quiet(), torch.no_grad():
                torch.onnx.export(
                    module, args, str(path),
                    input_names=[t.name for t in spec.inputs],
                    output_names=[t.name for t in spec.outputs],
                    dynamic_shapes=dynamic,
                    dynamo=True,
                    external_data=False,
                )
        except Exception as exc:
            raise GfedgeError(f"torch could not export the {spec.family} model: {exc}".splitlines()[0], "report this with GFEDGE_DEBUG=1") from exc
        model = onnx.load(str(path))
    _name_dims(model, spec)
    _drop_stack_traces(model.graph)
    return model


def fingerprint(exportable: Exportable) -> str:
    """What a trace depends on: the module's weights and buffers, its lowering, and the spec's inputs, outputs and
    dimension ranges (sha256). export_bundle(traced=...) checks a reused trace against it."""
    spec = exportable.spec
    weights = arrays_sha256({name: t.detach().cpu().numpy() for name, t in exportable.module.state_dict().items()})
    return canonical_sha256({"family": spec.family, "lowering": exportable.info.get("lowering"), "class": type(exportable.module).__qualname__,
                             "inputs": [[t.name, t.dtype, list(t.shape)] for t in spec.inputs],
                             "outputs": [[t.name, t.dtype, list(t.shape)] for t in spec.outputs],
                             "dims": {name: [r.min, r.max] for name, r in spec.dim_ranges.items()}, "weights": weights})


@dataclass(frozen=True)
class Traced:
    """A trace with the fingerprint of the exportable it came from, for export_bundle(traced=...): one model exported
    at several precisions is traced once (the trace is most of a small model's export)."""

    graph: onnx.ModelProto
    fingerprint: str


def traced(exportable: Exportable) -> Traced:
    return Traced(trace(exportable), fingerprint(exportable))


# torch's exporter records every node's Python stack trace, absolute paths of this machine's source tree
# and venv included: a bundle would carry them, and its bytes would change with where the code is installed.
STACK_TRACE = "pkg.torch.onnx.stack_trace"


def _drop_stack_traces(graph: onnx.GraphProto) -> None:
    """Remove the stack-trace metadata of every node (subgraphs too); the module scopes and op names stay."""
    for node in graph.node:
        kept = [p for p in node.metadata_props if p.key != STACK_TRACE]
        if len(kept) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
        for attribute in node.attribute:
            for sub in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                _drop_stack_traces(sub)


def _name_dims(model: onnx.ModelProto, spec) -> None:
    """Give graph inputs and outputs the spec's dimension names (the exporter invents its own)."""
    tensors = {t.name: t for t in (*spec.inputs, *spec.outputs)}
    for value in (*model.graph.input, *model.graph.output):
        want = tensors.get(value.name)
        if want is None:
            continue
        for dim, size in zip(value.type.tensor_type.shape.dim, want.shape):
            if isinstance(size, str):
                dim.ClearField("dim_value")
                dim.dim_param = size
