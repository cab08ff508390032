"""TriX at int4 passes every parity gate (route agreement >= the shipped 97% in every layer): the weights
before the routers (embeddings, attention) stay 8-bit, the head 4-bit, the tiles 2-bit, and the
session keeps them so. All-4-bit weights moved 4.3% of the test model's layer-0 routes."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.parity import verify_bundle
from geofractal_edge.parity.tolerances import shipped


def _gate(report) -> float:
    check = next(c for c in report.checks if c.name == "route_agreement")
    assert check.limit == shipped()["int4"]["route_agreement_min"] == 0.97  # the gate as shipped, not overridden
    return check.limit


def _bits(model: onnx.ModelProto) -> Counter:
    """How many MatMulNBits nodes of each bit width."""
    return Counter(next(a.i for a in n.attribute if a.name == "bits") for n in model.graph.node if n.op_type == "MatMulNBits")


@pytest.mark.parametrize("lowering", ["compute_all_select", "gather_by_route", "dispatch_by_route"])
def test_int4_routes_agree_in_every_layer_and_every_gate_passes(trix_bundle_factory, lowering):
    bundle = trix_bundle_factory("int4", lowering)
    report = verify_bundle(bundle)
    per_layer = report.metrics["route_agreement"]["by_output"]["routes"]["per_layer"]
    print(f"\nint4 {lowering}: route agreement per layer {per_layer}")
    assert len(per_layer) == 2 and min(per_layer) >= _gate(report), per_layer
    assert report.passed, [c.to_dict() for c in report.failed_checks]
    assert open_bundle(bundle).manifest.quantization["int8_upstream_of"] == ["routes"]  # what was kept 8-bit, recorded


def test_int4_weights_are_8_bit_before_the_routers_4_bit_after_and_stay_so_in_the_session(trix_bundle_factory, tmp_path):
    bundle = trix_bundle_factory("int4", "compute_all_select")  # tiles as 2-bit MatMulNBits
    model = onnx.load(str(bundle / "model.onnx"))
    layers = 2
    tiles = _bits(onnx.load(str(trix_bundle_factory("fp32", "compute_all_select") / "model.onnx")))[2]
    # per layer: qkv and out-projection at 8 bits in host-cpu's int8 form (dynamic: int8 weights on the integer kernel);
    # the head at 4; the tiles (and routing signatures) at 2, as in the fp32 bundle: compute-all bundles keep
    # onnxruntime's exact 2-bit kernel (no lookup tables, signatures packed)
    assert open_bundle(bundle).manifest.quantization["int8_form"] == "dynamic"
    assert tiles and _bits(model) == {4: 1, 2: tiles}
    integer = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    assert len(integer) == 2 * layers
    assert not open_bundle(bundle).manifest.target.runtime.lut_gemm
    inits = {i.name: i for i in model.graph.initializer}
    assert inits["tok_emb.weight.int8"].data_type == onnx.TensorProto.INT8
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(bundle / "model.onnx"), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    assert _bits(optimized) == _bits(model)
    kept = {i.name: i for i in optimized.graph.initializer}
    assert all(kept[n.input[1]].data_type == onnx.TensorProto.UINT8 for n in optimized.graph.node if n.op_type == "MatMulNBits")
    assert kept["tok_emb.weight.int8"].data_type == onnx.TensorProto.INT8
    fused = [n for n in optimized.graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    assert len(fused) == 2 * layers and all(kept[n.input[1]].data_type == onnx.TensorProto.INT8 for n in fused)
    floats = [(i.name, list(i.dims)) for i in optimized.graph.initializer
              if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) and np.prod(i.dims) >= 32 * 32]
    assert not floats, f"a weight was folded back to float: {floats}"


def test_int4_for_tensorrt_targets_passes_its_gates_with_int8_dequantize_before_the_routers(trix_checkpoint, tmp_path):
    """"qdq" dialect: standard ops only; per-output-channel INT8 DequantizeLinear for the attention weights."""
    from geofractal_edge.models.trix.checkpoint import load_checkpoint
    from geofractal_edge.models.trix.family import exportable_from_model
    from geofractal_edge.pipeline import export_bundle

    exportable = exportable_from_model(load_checkpoint(trix_checkpoint), name="trix-test", source={}, lowering="gather_by_route")
    result = export_bundle(family="trix", target="jetson-orin-nano", precision="int4", out=tmp_path / "b", exportable=exportable)
    per_layer = result.parity.metrics["route_agreement"]["by_output"]["routes"]["per_layer"]
    print(f"\nint4 qdq: route agreement per layer {per_layer}")
    assert min(per_layer) >= _gate(result.parity) and result.parity.passed, [c.to_dict() for c in result.parity.failed_checks]
    model = onnx.load(str(tmp_path / "b" / "model.onnx"))
    assert not any(n.domain for n in model.graph.node)
    inits = {i.name: i for i in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    int8 = [n for n in dq if inits[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert len(int8) == 4 and all(next(a.i for a in n.attribute if a.name == "axis") == 1 for n in int8)  # qkv, out x 2 layers
