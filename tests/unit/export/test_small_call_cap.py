"""The small-call session's weight cap counts 2-bit weights onnxruntime prepacks for int8 activations at their prepacked size."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from geofractal_edge.backends.initializers import graph_weight_bytes
from geofractal_edge.export import lowbit, small_calls


def _model(path, levels: list[int]) -> int:
    """One 2-bit MatMulNBits per level, each on its own 64 x 64 ternary weight; returns the bytes of one packed weight."""
    rng = np.random.default_rng(0)
    packed = [lowbit.ternary_blocks(rng.integers(-1, 2, (64, 64)), 64) for _ in levels]
    nodes = [lowbit.matmul_nbits("x", f"y{i}", name=f"m{i}", packed=f"w{i}", scales="s", k=64, n=64, bits=2, block_size=64, accuracy_level=lv)
             for i, lv in enumerate(levels)]
    inits = [numpy_helper.from_array(p, f"w{i}") for i, p in enumerate(packed)] + [numpy_helper.from_array(np.ones((64, 1), np.float32), "s")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, 64]) for i in range(len(levels))], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(lowbit.MS_DOMAIN, 1)]), str(path))
    return packed[0].nbytes


def test_only_int8_activation_weights_grow(tmp_path):
    one = _model(tmp_path / "mixed.onnx", [0, 4, 4])
    assert small_calls._prepack_growth(tmp_path / "mixed.onnx") == int(2 * one * (small_calls.TWO_BIT_INT8_PREPACK - 1))
    _model(tmp_path / "float.onnx", [0, 0])
    assert small_calls._prepack_growth(tmp_path / "float.onnx") == 0


def test_the_cap_refuses_what_only_the_prepacked_size_puts_over_it(tmp_path, monkeypatch):
    from geofractal_edge.targets import get_target

    _model(tmp_path / "m.onnx", [4])
    settings = get_target("host-cpu").runtime
    monkeypatch.setattr(small_calls, "MAX_WEIGHT_BYTES", graph_weight_bytes(tmp_path / "m.onnx"))  # the file's bytes fit exactly
    record = small_calls._over_cap(tmp_path / "m.onnx", settings)
    assert record is not None and not record.kept and "a second session's copy" in record.why
