"""Issue 11: every bundle's model.onnx is standard, self-contained ONNX that plain tools open, and at int8
and int4 every weight of every family is low-bit (weight bytes against the float32 graph)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from geofractal_edge.targets.precisions import PRECISIONS

FACTORIES = {"atlas": "bundle_factory", "trix": "trix_bundle_factory", "collective": "collective_bundle_factory"}
RATIO_MAX = {"int8": 0.30, "int4": 0.20}  # weight bytes / float32 weight bytes


def _bundle(request, family: str, precision: str) -> Path:
    if family == "collective-encoder":
        return request.getfixturevalue("encoder_bundle_factory")(precision)
    return request.getfixturevalue(FACTORIES[family])(precision)


def _opens_with_plain_tools(path: Path) -> None:
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(str(path), load_external_data=False)
    assert not [i.name for i in graph.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL], "self-contained"
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # no gfedge code, nothing handed over
    polygraphy = Path(sys.executable).with_name("polygraphy")
    result = subprocess.run([str(polygraphy), "inspect", "model", str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("family", list(FACTORIES))
def test_model_onnx_opens_in_plain_onnxruntime_onnx_checker_and_polygraphy(request, family, precision):
    _opens_with_plain_tools(_bundle(request, family, precision) / "model.onnx")


@pytest.mark.parametrize("precision", ["fp32", "int8", "int4"])
def test_trix_dispatch_model_onnx_opens_in_plain_tools(trix_bundle_factory, precision):
    """host-cpu's lowering for many tiles: one 2-bit MatMulNBits per tile, data-dependent token counts, still plain ONNX."""
    _opens_with_plain_tools(trix_bundle_factory(precision, "dispatch_by_route") / "model.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_encoder_model_onnx_opens_with_plain_tools(request, precision):
    _opens_with_plain_tools(_bundle(request, "collective-encoder", precision) / "model.onnx")


def stored_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every initializer (and Constant node) as the graph stores it: INT4 at half a byte, packed uint8 as is."""
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    total = 0
    for t in tensors:
        count = int(np.prod(t.dims)) if t.dims else 1
        if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            total += (count + 1) // 2
        else:
            total += count * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def float_weight_bytes(request, family: str) -> int:
    """The float32 graph torch exports: the fp32 bundle, except TriX, whose fp32 bundle already packs tiles at 2 bits."""
    if family != "trix":
        return stored_bytes(onnx.load(str(_bundle(request, family, "fp32") / "model.onnx")))
    from geofractal_edge.export.trace import trace
    from geofractal_edge.models.trix.checkpoint import load_checkpoint
    from geofractal_edge.models.trix.family import exportable_from_model

    lm = load_checkpoint(request.getfixturevalue("trix_checkpoint"))
    return stored_bytes(trace(exportable_from_model(lm, name="t", source={}, lowering="gather_by_route")))


def _ratios(request, family: str) -> dict[str, float]:
    base = float_weight_bytes(request, family)
    ratios = {p: stored_bytes(onnx.load(str(_bundle(request, family, p) / "model.onnx"))) / base for p in PRECISIONS}
    print(f"\n{family}: float32 weights {base:,} B; " + ", ".join(f"{p} {r:.3f}" for p, r in ratios.items()))
    return ratios


@pytest.mark.parametrize("family", list(FACTORIES))
def test_int8_and_int4_weights_are_at_most_030_and_020_of_float32(request, family):
    ratios = _ratios(request, family)
    for precision, limit in RATIO_MAX.items():
        assert ratios[precision] <= limit, (family, precision, ratios)


@pytest.mark.slow
def test_encoder_int8_and_int4_weights_are_at_most_030_and_020_of_float32(request):
    ratios = _ratios(request, "collective-encoder")
    for precision, limit in RATIO_MAX.items():
        assert ratios[precision] <= limit, ratios
