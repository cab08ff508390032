"""split_dispatch on a hand-built dispatch (fast, no torch export): it rewrites an int64-route graph of opset >= 18 with
every output bit kept while routes are in [0, T); it leaves an older opset or int32 routes as they are; a route >= T
fails the run instead of being dropped as the original graph drops it, and a negative one is silently wrong."""

from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from geofractal_edge.export.dispatch import split_dispatch

T, D = 3, 4


def _dispatch(*, opset: int = 18, route_type: int = TensorProto.INT64) -> onnx.ModelProto:
    """The exporter's form: out = ScatterND(zeros, Unsqueeze(Concat(idx_t)), Concat(Mul(MatMul(x[idx_t], w_t), s_t))),
    idx_t = Squeeze(Transpose(NonZero(Equal(route, t)))), for t < T."""
    rng = np.random.default_rng(0)
    ints = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("axis1", [1]), ("flat", [-1]), ("last", [-1]))]
    nodes = [helper.make_node("Shape", ["x"], ["x_shape"]), helper.make_node("ConstantOfShape", ["x_shape"], ["zeros"])]
    for t in range(T):
        ints += [numpy_helper.from_array(np.array(t, helper.tensor_dtype_to_np_dtype(route_type)), f"c{t}"),
                 numpy_helper.from_array(rng.standard_normal((D, D)).astype(np.float32), f"w{t}"),
                 numpy_helper.from_array(np.array(0.5 + t, np.float32), f"s{t}")]
        nodes += [helper.make_node("Equal", ["route", f"c{t}"], [f"eq{t}"]), helper.make_node("NonZero", [f"eq{t}"], [f"nz{t}"]),
                  helper.make_node("Transpose", [f"nz{t}"], [f"tr{t}"], perm=[1, 0]), helper.make_node("Squeeze", [f"tr{t}", "axis1"], [f"idx{t}"]),
                  helper.make_node("Reshape", [f"idx{t}", "flat"], [f"flat{t}"]), helper.make_node("Gather", ["x", f"flat{t}"], [f"rows{t}"], axis=0),
                  helper.make_node("MatMul", [f"rows{t}", f"w{t}"], [f"mm{t}"]), helper.make_node("Mul", [f"mm{t}", f"s{t}"], [f"y{t}"])]
    nodes += [helper.make_node("Concat", [f"idx{t}" for t in range(T)], ["order"], axis=0), helper.make_node("Unsqueeze", ["order", "last"], ["ind"]),
              helper.make_node("Concat", [f"y{t}" for t in range(T)], ["ys"], axis=0), helper.make_node("ScatterND", ["zeros", "ind", "ys"], ["out"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", D]), helper.make_tensor_value_info("route", route_type, ["n"])]
    graph = helper.make_graph(nodes, "dispatch", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", D])], ints)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _run(model: onnx.ModelProto, route: list[int]) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failing run below would log its error as well as raise it
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((len(route), D)).astype(np.float32)
    return session.run(None, {"x": x, "route": np.array(route, np.int64)})[0]


def _nodes(model: onnx.ModelProto) -> list[bytes]:
    return [n.SerializeToString() for n in model.graph.node]


def test_an_int64_route_dispatch_at_opset_18_is_split_and_keeps_every_output_bit() -> None:
    """The control for the fallbacks below: this graph is one split_dispatch rewrites."""
    model = _dispatch()
    split = split_dispatch(copy.deepcopy(model))
    ops = Counter(n.op_type for n in split.graph.node)
    assert ops["NonZero"] == 0 and ops["TopK"] == 1 and ops["Split"] == 1 and ops["MatMul"] == T and ops["Mul"] == 2  # the scale once, and the key's Mul
    onnx.checker.check_model(split, full_check=True)
    for route in ([0, 2, 1, 2, 0, 0], [1, 1], [2], [2, 1, 0]):  # idle tiles, one row, reversed
        assert np.array_equal(_run(split, route), _run(model, route))


def test_an_opset_below_18_keeps_its_dispatch() -> None:
    model = _dispatch(opset=17)
    before = _nodes(model)
    assert split_dispatch(model) is model and _nodes(model) == before


def test_int32_routes_keep_their_dispatch() -> None:
    """The sort key and the counts are int64: a dispatch on int32 routes is found, then left as it is."""
    model = _dispatch(route_type=TensorProto.INT32)
    before = _nodes(model)
    split = split_dispatch(copy.deepcopy(model))
    assert _nodes(split) == before


def test_a_route_past_the_tiles_fails_the_run_where_the_original_drops_the_row() -> None:
    model = _dispatch()
    split = split_dispatch(copy.deepcopy(model))
    route = [0, T, 1]
    assert not _run(model, route)[1].any()  # the original: no tile takes the row, it stays zero
    with pytest.raises(InvalidArgument):  # the counts refuse it: a loud failure, not a silently wrong row
        _run(split, route)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="a negative route shifts every tile's rows in the rewritten graph (dispatch.py's docstring); "
                   "the lowerings' routes come from ArgMax and are never negative")
def test_a_negative_route_drops_its_row_as_the_original_does() -> None:
    """What the rewrite should do with a negative route: what the original graph does (no tile takes the row, every other
    row intact). Today token 0 (route 0) is computed on another tile's weights, so this fails; a fix shows as XPASS."""
    model = _dispatch()
    split = split_dispatch(copy.deepcopy(model))
    route = [0, -1, 1, 2]
    original, rewritten = _run(model, route), _run(split, route)
    assert not original[1].any()  # the original drops the row
    assert np.array_equal(original, rewritten)
