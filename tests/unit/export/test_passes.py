"""Graph passes the quantizers share: same-named initializers kept once, and refused when they differ."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from geofractal_edge.export.passes import dedupe_initializers


def test_dedupe_initializers_keeps_one_copy_and_refuses_different_contents():
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    raw = numpy_helper.from_array(values, "w")
    listed = helper.make_tensor("w", TensorProto.FLOAT, [2, 3], values.reshape(-1).tolist())  # same values, float_data
    graph = helper.make_graph([], "g", [], [], [raw, listed, numpy_helper.from_array(values, "v")])
    model = dedupe_initializers(helper.make_model(graph))
    assert [i.name for i in model.graph.initializer] == ["w", "v"]
    for other in (values + 1, values.reshape(3, 2), values.astype(np.float16)):
        graph = helper.make_graph([], "g", [], [], [raw, numpy_helper.from_array(other, "w")])
        with pytest.raises(ValueError, match="two different initializers are named w"):
            dedupe_initializers(helper.make_model(graph))


@pytest.mark.parametrize("towers", [1, 5])
def test_per_slice_computes_the_batched_product_with_one_split_and_one_concat(towers):
    """MatMul(X [T, B, K], W [T, K, N]) as one product per slice, each slice keeping its leading 1 (a MatMul broadcasts
    over it): the same numbers, with a Split and the Concat and no Gather or Unsqueeze per slice."""
    import onnx
    import onnxruntime as ort

    from geofractal_edge.export.passes import per_slice

    rng = np.random.default_rng(0)
    batch, k, n = 3, 8, 4
    x, w = rng.standard_normal((towers, batch, k)).astype(np.float32), rng.standard_normal((towers, k, n)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")

    def body(t, xt, yt, name):
        return [helper.make_node("MatMul", [xt, f"w.{t}"], [yt], name=f"{name}.mm")]

    nodes, inits = per_slice(node, 0, towers, "f", body)
    inits += [numpy_helper.from_array(w[t], f"w.{t}") for t in range(towers)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["t", "b", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["t", "b", n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, np.matmul(x, w), rtol=1e-5, atol=1e-5)
    assert [nd.op_type for nd in nodes] == ["Split", *["MatMul"] * towers, "Concat"]
