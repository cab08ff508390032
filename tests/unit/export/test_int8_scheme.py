"""int8 activations per target: static Q/DQ (TensorRT) or dynamic MatMulInteger (onnxruntime), resolved before
export and recorded in the manifest; a dynamic bundle keeps int8 weights in onnxruntime's optimized graph; smoothing is exact in float."""

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from geofractal_edge.errors import GfedgeError
from geofractal_edge.export.quantize import default_config
from geofractal_edge.export.quantize.int8 import Int8Config
from geofractal_edge.targets import all_targets, get_target
from geofractal_edge.targets.profile import TargetProfile


def test_the_default_int8_config_takes_the_targets_choice():
    config = default_config("int8")
    assert config.activations == "target"
    for name in all_targets():
        profile = get_target(name)
        resolved = config.for_target(profile)
        assert resolved.activations == profile.int8_activations
        assert resolved.for_target(profile) == resolved  # resolved once, kept after
        if profile.tensorrt_version is not None:
            assert resolved.activations == "static", f"{name}: TensorRT builds int8 from explicit Q/DQ only"


def test_host_cpu_runs_int8_dynamic():
    """Chosen by benchmarks/int8_scheme.py (the figures are in host-cpu.toml)."""
    assert get_target("host-cpu").int8_activations == "dynamic"


def test_dynamic_is_refused_where_tensorrt_builds_and_unknown_values_are_named():
    qdq = next(p for p in all_targets().values() if p.weight_dialect == "qdq")
    with pytest.raises(GfedgeError, match="cannot run on target") as err:
        Int8Config(activations="dynamic").for_target(qdq)
    assert "\n" not in str(err.value)
    with pytest.raises(GfedgeError, match="needs weight_dialect"):
        dataclasses.replace(qdq, int8_activations="dynamic")
    with pytest.raises(GfedgeError, match="int8_activations 'sometimes'"):
        dataclasses.replace(qdq, int8_activations="sometimes")
    with pytest.raises(GfedgeError, match="static, dynamic, target"):
        Int8Config(activations="always")


def test_old_profiles_without_the_field_read_as_static():
    data = get_target("host-cpu").to_dict()
    del data["int8_activations"]
    assert TargetProfile.from_dict(data).int8_activations == "static"


def test_dynamic_bundle_records_its_scheme_and_keeps_int8_weights_after_onnxruntime_optimizes(bundle_factory, tmp_path):
    import onnxruntime as ort

    from geofractal_edge.artifacts import open_bundle

    bundle = open_bundle(bundle_factory("int8"))  # host-cpu: dynamic
    assert bundle.manifest.quantization["activations"] == "dynamic"
    model = onnx.load(str(bundle.model_path))
    ops = {n.op_type for n in model.graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops and "QuantizeLinear" not in ops
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(bundle.model_path), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    inits = {i.name: i for i in optimized.graph.initializer}
    fused = [n for n in optimized.graph.node if n.op_type in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger")]
    assert fused, "the weight products stay integer products"
    weights = [inits[i] for n in fused for i in n.input[:2] if i in inits]
    assert weights and all(w.data_type == TensorProto.INT8 for w in weights)
    smallest = min(int(np.prod(w.dims)) for w in weights)
    floats = [(i.name, list(i.dims)) for i in optimized.graph.initializer
              if i.data_type == TensorProto.FLOAT and len(i.dims) >= 2 and np.prod(i.dims) >= smallest]
    assert not floats, f"a weight was folded back to float: {floats}"


def test_smoothing_is_exact_in_float_and_adds_one_input_mul_per_activation():
    import onnxruntime as ort

    from geofractal_edge.export.quantize.smooth import smooth

    rng = np.random.default_rng(0)
    x_scale = np.ones(8, np.float32)
    x_scale[3] = 30.0  # an outlier channel
    w1, w2 = rng.normal(size=(8, 6)).astype(np.float32), rng.normal(size=(8, 5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["y1"], name="m1"), helper.make_node("MatMul", ["x", "w2"], ["y2"], name="m2")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [None, 6]), helper.make_tensor_value_info("y2", TensorProto.FLOAT, [None, 5])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": (rng.normal(size=(16, 8)) * x_scale).astype(np.float32)} for _ in range(2)]

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds[0])

    want = run(model)
    for outputs, muls in ((False, 1), (True, 3)):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        smoothed = smooth(copy, feeds, alpha=0.5, outputs=outputs, skip=set())
        assert sum(n.op_type == "Mul" for n in smoothed.graph.node) == muls
        for got, ref in zip(run(smoothed), want):
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
        inv = numpy_helper.to_array(next(i for i in smoothed.graph.initializer if i.name == "x.smooth_inv"))
        assert inv[3] == inv.min() < 1.0  # the outlier channel is divided the most
