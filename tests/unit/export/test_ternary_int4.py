"""The TensorRT ("qdq") form of ternary tiles: INT4 DequantizeLinear with unit scales at TensorRT's documented
block sizes, the graph's own tile-scale multiply kept, and the TriX int4 bundle's weights <= 0.20 of float32."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from geofractal_edge.export.ternary_int4 import TRT_INT4_BLOCK_SIZES, block_layout, ternary_to_int4_dq


@pytest.mark.parametrize(("shape", "layout"), [
    ((4, 128, 128), (2, 128)),  # shipped TriX tiles: the last axis on a tie
    ((4, 64, 32), (1, 64)),  # test TriX up tiles: only the second to last axis takes a TensorRT block
    ((4, 32, 64), (2, 64)),
    ((2, 256, 64), (1, 128)),  # the larger block first, wherever it fits
    ((3, 48, 40), (1, 48)),  # no TensorRT block divides either axis: one block over the longer one
])
def test_block_layout_takes_the_fewest_scales_on_the_last_two_axes(shape, layout):
    assert block_layout(shape) == layout


def _tiny_graph(rng: np.random.Generator):
    """y_i = (W_i @ x) * s_i[:, None, None] for two ternary tiles of one shape and one of another, as the TriX lowering
    applies its scales (to the matmul outputs)."""
    n, b, m = 3, 64, 5
    shapes = {"a_q": (n, 64, b), "b_q": (n, 64, b), "c_q": (n, 32, b)}
    inits, nodes, outputs, codes = [], [], [], {}
    for name, shape in shapes.items():
        codes[name] = rng.integers(-1, 2, size=shape).astype(np.float32)
        scale = rng.uniform(0.01, 0.2, size=(n,)).astype(np.float32)
        inits += [numpy_helper.from_array(codes[name], name), numpy_helper.from_array(scale, name[:-2] + "_scale"),
                  numpy_helper.from_array(np.array([n, 1, 1], np.int64), name + ".shape")]
        nodes += [helper.make_node("MatMul", [name, "x"], [name + ".mm"]),
                  helper.make_node("Reshape", [name[:-2] + "_scale", name + ".shape"], [name + ".s"]),
                  helper.make_node("Mul", [name + ".mm", name + ".s"], [name + ".y"])]
        outputs.append(helper.make_tensor_value_info(name + ".y", TensorProto.FLOAT, [n, shape[1], m]))
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, b, m])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model, codes, tuple((c, c[:-2] + "_scale") for c in shapes), rng.standard_normal((n, b, m)).astype(np.float32)


def test_unit_scale_dequantize_gives_the_float_graph_bit_for_bit():
    model, codes, pairs, x = _tiny_graph(np.random.default_rng(0))
    lowered = ternary_to_int4_dq(model, codes, pairs)
    onnx.checker.check_model(lowered, full_check=True)
    inits = {i.name: i for i in lowered.graph.initializer}
    dq = [n for n in lowered.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == 3 and all(inits[n.input[0]].data_type == TensorProto.INT4 for n in dq)
    assert not [c for c in codes if c in inits], "no float copy of a tile"
    attrs = [{a.name: a.i for a in n.attribute} for n in dq]
    assert all(a["block_size"] in TRT_INT4_BLOCK_SIZES for a in attrs)
    for node in dq:  # ones, in the graph's float type: the DQ output is the code itself
        scale = numpy_helper.to_array(inits[node.input[1]])
        assert scale.dtype == np.float32 and (scale == 1).all()
    assert len({n.input[1] for n in dq}) == 2, "one unit-scale tensor per shape"
    for _, scale_name in pairs:  # the graph's own scales are left as they are
        original = next(i for i in model.graph.initializer if i.name == scale_name)
        np.testing.assert_array_equal(numpy_helper.to_array(inits[scale_name]), numpy_helper.to_array(original))
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})  # noqa: E731
    for before, after in zip(run(model), run(lowered)):
        np.testing.assert_array_equal(after, before)


def test_tensorrt_form_of_trix_int4_is_at_most_020_of_float32_and_passes_every_gate(trix_checkpoint, tmp_path):
    """jetson-orin-nano ("qdq"): the weight bytes of the exported graph against the float32 graph torch exports, the
    parity gates of `gfedge export` (tolerances.toml), and plain onnx / onnxruntime / polygraphy loading."""
    from geofractal_edge.export.trace import trace
    from geofractal_edge.models.trix.checkpoint import load_checkpoint
    from geofractal_edge.models.trix.family import exportable_from_model
    from geofractal_edge.pipeline import export_bundle
    from tests.integration.test_bundle_onnx import RATIO_MAX, _opens_with_plain_tools, stored_bytes

    lm = load_checkpoint(trix_checkpoint)
    exportable = exportable_from_model(lm, name="trix-test", source={}, lowering="gather_by_route")
    float32 = stored_bytes(trace(exportable))
    result = export_bundle(family="trix", target="jetson-orin-nano", precision="int4", out=tmp_path / "b", exportable=exportable)
    assert result.parity.passed, [c.to_dict() for c in result.parity.failed_checks]
    assert min(result.parity.metrics["route_agreement"]["by_output"]["routes"]["per_layer"]) >= 0.97
    path = tmp_path / "b" / "model.onnx"
    model = onnx.load(str(path))
    ratio = stored_bytes(model) / float32
    print(f"\nTriX int4 for TensorRT: {stored_bytes(model):,} B of {float32:,} B float32 = {ratio:.4f}")
    assert ratio <= RATIO_MAX["int4"], ratio
    inits = {i.name: i for i in model.graph.initializer}
    tiles = {c: s for c, s in exportable.spec.ternary}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in tiles]
    assert len(dq) == len(tiles) and all(inits[n.input[0]].data_type == TensorProto.INT4 for n in dq)
    assert all(a.i in TRT_INT4_BLOCK_SIZES for n in dq for a in n.attribute if a.name == "block_size")
    for i, ffn in enumerate(lm.trix_ffns()):  # the tile scales are the torch scales, applied by the graph
        _, up_scale, _, down_scale = (t.detach().float().numpy() for t in ffn.tile_weights())
        np.testing.assert_array_equal(numpy_helper.to_array(inits[f"blocks.{i}.ffn.up_scale"]), up_scale)
        np.testing.assert_array_equal(numpy_helper.to_array(inits[f"blocks.{i}.ffn.down_scale"]), down_scale)
    _opens_with_plain_tools(path)  # full onnx.checker, a plain onnxruntime session, `polygraphy inspect model`
