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
