"""The onnxruntime ("ort") form of ternary tiles: each tensor's codes and unit scales made once however many
nodes read it, the float graph's outputs kept, only -1, 0 and +1 lowered, and the full ONNX check left to the export."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from geofractal_edge.errors import Bug, GfedgeError
from geofractal_edge.export import lowbit
from geofractal_edge.export.quantize import QuantContext, default_config, quantize
from geofractal_edge.export.ternary import lower_ternary
from geofractal_edge.models.spec import ExportSpec

N, A, B, M = 3, 8, 64, 5
TABLE = (10, 40)  # 40: not a whole block, the gathered rows are sliced back
pack = lowbit.ternary_blocks


def _spec(ternary: tuple[tuple[str, str], ...]) -> ExportSpec:
    return ExportSpec(family="toy", inputs=(), outputs=(), dim_ranges={}, task_metric="accuracy", ternary=ternary)


def _graph(rng: np.random.Generator) -> onnx.ModelProto:
    """Each ternary tensor read by two nodes of one lowering: per tile (t_q), shared (s_q), gathered (g_q)."""
    codes = {"t_q": (N, A, B), "s_q": (A, B), "g_q": TABLE}
    inits = [numpy_helper.from_array(rng.integers(-1, 2, size=shape).astype(np.float32), name) for name, shape in codes.items()]
    nodes = [helper.make_node("MatMul", ["t_q", "x"], ["t1"], name="t1"), helper.make_node("MatMul", ["t_q", "x2"], ["t2"], name="t2"),
             helper.make_node("MatMul", ["s_q", "y"], ["s1"], name="s1"), helper.make_node("MatMul", ["s_q", "y2"], ["s2"], name="s2"),
             helper.make_node("Gather", ["g_q", "i"], ["g1"], name="g1"), helper.make_node("Gather", ["g_q", "i2"], ["g2"], name="g2")]
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(n, f, [N, B, M]) for n in ("x", "x2")] + [helper.make_tensor_value_info(n, f, [B, M]) for n in ("y", "y2")]
    inputs += [helper.make_tensor_value_info(n, TensorProto.INT64, [4]) for n in ("i", "i2")]
    shapes = {"t1": [N, A, M], "t2": [N, A, M], "s1": [A, M], "s2": [A, M], "g1": [4, TABLE[1]], "g2": [4, TABLE[1]]}
    outputs = [helper.make_tensor_value_info(n, f, shape) for n, shape in shapes.items()]
    graph = helper.make_graph(nodes, "toy", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_codes_and_unit_scales_are_made_once_per_tensor_and_the_outputs_kept(monkeypatch):
    rng = np.random.default_rng(0)
    model = _graph(rng)
    feeds = {n: rng.standard_normal((N, B, M)).astype(np.float32) for n in ("x", "x2")}
    feeds |= {n: rng.standard_normal((B, M)).astype(np.float32) for n in ("y", "y2")}
    feeds |= {n: rng.integers(0, TABLE[0], size=4) for n in ("i", "i2")}
    want = _run(model, feeds)
    packed = []
    monkeypatch.setattr(lowbit, "ternary_blocks", lambda values, block: packed.append(values.shape) or pack(values, block))
    lowered = lower_ternary(model, _spec((("t_q", "unused"), ("s_q", "unused"), ("g_q", "unused"))), dialect="ort")
    assert packed == [(N, A, B), (A, B), TABLE]  # once per tensor, not per reader
    ops = [n.op_type for n in lowered.graph.node]
    assert ops.count("ConstantOfShape") == 3 and ops.count("MatMulNBits") == 2 * N + 2 and ops.count("GatherBlockQuantized") == 2
    names = [i.name for i in lowered.graph.initializer]
    assert len(names) == len(set(names)) and {"t_q.q2t.0", "s_q.q2", "g_q.q2g"} <= set(names)
    for got, expected in zip(_run(lowered, feeds), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_quantize_and_the_lowering_leave_the_full_check_to_the_export(monkeypatch):
    """The export runs onnx's full check once, on the final graph (tests/integration/test_export_checked_once.py):
    neither step runs it, with ternary tensors or without."""
    checks = []
    real = onnx.checker.check_model
    monkeypatch.setattr(onnx.checker, "check_model", lambda model, **kw: checks.append(kw) or real(model, **kw))
    spec = _spec((("t_q", "g_q"),))  # the "qdq" form needs the scale to be an initializer; it leaves it as it is
    quantized = quantize(_graph(np.random.default_rng(1)), default_config("fp32"), QuantContext(spec=spec, dialect="ort"))
    for dialect in ("ort", "qdq"):
        lower_ternary(quantized, spec, dialect=dialect)
    quantize(_graph(np.random.default_rng(1)), default_config("fp32"), QuantContext(spec=_spec(()), dialect="ort"))
    assert checks == []


@pytest.mark.parametrize("dialect", ["ort", "qdq"])
def test_a_tensor_that_is_not_ternary_is_a_bug_and_each_is_checked_once(monkeypatch, dialect):
    model = _graph(np.random.default_rng(2))
    spec = _spec((("t_q", "g_q"), ("s_q", "g_q")))
    calls = []
    real = np.isin
    monkeypatch.setattr(np, "isin", lambda *a, **kw: calls.append(a[0].shape) or real(*a, **kw))
    lower_ternary(model, spec, dialect=dialect)
    assert sorted(calls) == sorted([(N, A, B), (A, B)])  # one check per tensor, in lower_ternary only
    inits = {i.name: i for i in model.graph.initializer}
    bad = numpy_helper.to_array(inits["s_q"]).copy()
    bad[0, 0] = 0.5  # int8 codes would truncate it to 0: refused before any packing
    inits["s_q"].CopyFrom(numpy_helper.from_array(bad, "s_q"))
    with pytest.raises(Bug, match="ternary tensor s_q holds values other than -1, 0, \\+1"):
        lower_ternary(model, spec, dialect=dialect)


def _select(t: int) -> onnx.ModelProto:
    """dispatch_by_route's tile select: Gather(w_q [N, A, B], constant t) -> Transpose -> right operand of two MatMuls."""
    w = np.random.default_rng(3).integers(-1, 2, size=(N, A, B)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(np.array(t, np.int64), "t")]
    nodes = [helper.make_node("Gather", ["w_q", "t"], ["sel"], name="sel", axis=0), helper.make_node("Transpose", ["sel"], ["sel_t"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "sel_t"], ["y"], name="y"), helper.make_node("MatMul", ["x2", "sel_t"], ["y2"], name="y2")]
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(n, f, [M, B]) for n in ("x", "x2")]
    outputs = [helper.make_tensor_value_info(n, f, [M, A]) for n in ("y", "y2")]
    graph = helper.make_graph(nodes, "select", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


@pytest.mark.parametrize("t", [1, -1])
def test_a_tile_select_becomes_one_matmulnbits_per_matmul_on_that_tile(t):
    model = _select(t)
    rng = np.random.default_rng(4)
    feeds = {n: rng.standard_normal((M, B)).astype(np.float32) for n in ("x", "x2")}
    lowered = lower_ternary(model, _spec((("w_q", "unused"),)), dialect="ort")
    kept = [(n.op_type, n.input[1] if n.op_type == "MatMulNBits" else None) for n in lowered.graph.node if n.op_type != "ConstantOfShape"]
    assert kept == [("MatMulNBits", f"w_q.q2t.{t % N}")] * 2  # the Gather and Transpose gone, each MatMul on tile t counted from the end if negative
    for got, expected in zip(_run(lowered, feeds), _run(model, feeds), strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("t", [N, -N - 1])
def test_a_tile_select_past_the_tiles_is_a_bug_not_a_wrapped_tile(t):
    with pytest.raises(Bug, match=f"tile select sel reads tile {t} of w_q, which has {N}"):
        lower_ternary(_select(t), _spec((("w_q", "unused"),)), dialect="ort")


def test_a_tile_accuracy_level_reaches_every_product_of_the_codes_and_needs_one():
    """Per-tile and shared products take the level; a model whose ternary tensors are only gathered refuses it in one line."""
    model = _graph(np.random.default_rng(0))
    lowered = lower_ternary(model, _spec((("t_q", "unused"), ("s_q", "unused"), ("g_q", "unused"))), dialect="ort", tile_accuracy_level=4)
    levels = [{a.name: a.i for a in n.attribute}.get("accuracy_level") for n in lowered.graph.node if n.op_type == "MatMulNBits"]
    assert levels == [4] * (2 * N + 2)
    kept = ExportSpec(family="toy", inputs=(), outputs=(), dim_ranges={}, task_metric="accuracy", ternary=(("t_q", "unused"), ("g_q", "unused")),
                      keep_float=("s_q",))  # s_q packed 2-bit as a keep-float tensor (lossless): its products keep float arithmetic
    by_weight = {n.name: {a.name: a.i for a in n.attribute}.get("accuracy_level", 0)
                 for n in lower_ternary(model, kept, dialect="ort", tile_accuracy_level=4).graph.node if n.op_type == "MatMulNBits"}
    assert sorted(by_weight.values()) == [0, 0] + [4] * (2 * N), by_weight
    with pytest.raises(GfedgeError, match="multiplies no ternary tile") as caught:
        lower_ternary(model, _spec((("g_q", "unused"),)), dialect="ort", tile_accuracy_level=4)
    assert "drop tile_accuracy_level" in caught.value.fix


def test_a_tensor_listed_as_ternary_and_keep_float_is_a_bug():
    with pytest.raises(Bug, match="both ternary codes and keep_float"):
        ExportSpec(family="toy", inputs=(), outputs=(), dim_ranges={}, task_metric="accuracy", ternary=(("w_q", "s"),), keep_float=("w_q",))
