"""int8 input smoothing's strength is a setting of the config: left None it is the family's (`ExportSpec.smooth_alpha`),
resolved before export; a config that names it wins; quantize uses the resolved value and the manifest records it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from geofractal_edge.errors import Bug, GfedgeError
from geofractal_edge.export.quantize import QuantConfig, QuantContext, default_config, quantize
from geofractal_edge.export.quantize.int8 import Int8Config
from geofractal_edge.export.quantize.smooth import smooth
from geofractal_edge.models.spec import ExportSpec

K, N = 8, 6


def _spec(alpha: float = 0.0) -> ExportSpec:
    return ExportSpec(family="toy", inputs=(), outputs=(), dim_ranges={}, task_metric="accuracy", smooth_alpha=alpha)


def _model():
    """y = x @ w, x with one outlier channel (what smoothing is for)."""
    w = np.random.default_rng(0).normal(size=(K, N)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, N])], [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds():
    scale = np.ones(K, np.float32)
    scale[3] = 30.0
    rng = np.random.default_rng(1)
    return ({"x": (rng.normal(size=(16, K)) * scale).astype(np.float32)},)


def _smooth_inv(model) -> np.ndarray | None:
    found = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name == "x.smooth_inv"]
    return found[0] if found else None


def test_left_none_it_is_the_family_s_and_a_config_that_names_it_wins():
    assert default_config("int8").smooth_alpha is None
    assert default_config("int8").for_spec(_spec(0.5)).smooth_alpha == 0.5
    assert default_config("int8").for_spec(_spec()).smooth_alpha == 0.0
    assert Int8Config(smooth_alpha=0).for_spec(_spec(0.5)).smooth_alpha == 0.0
    assert Int8Config(smooth_alpha=0.25).for_spec(_spec(0.5)).smooth_alpha == 0.25
    resolved = default_config("int8").for_spec(_spec(0.5))
    assert resolved.for_spec(_spec()) == resolved  # resolved once, kept after


def test_quantize_smooths_with_the_config_s_alpha():
    context = lambda alpha: QuantContext(spec=_spec(alpha), calibration=_feeds(), dialect="ort")  # noqa: E731
    dynamic = Int8Config(activations="dynamic")
    assert _smooth_inv(quantize(_model(), dynamic, context(0.0))) is None
    assert _smooth_inv(quantize(_model(), dataclasses.replace(dynamic, smooth_alpha=0.0), context(0.5))) is None
    want = {a: _smooth_inv(smooth(_model(), _feeds(), alpha=a, outputs=False, skip=set())) for a in (0.5, 0.25)}
    assert not np.array_equal(want[0.5], want[0.25])
    np.testing.assert_array_equal(_smooth_inv(quantize(_model(), dynamic, context(0.5))), want[0.5])  # the family's
    np.testing.assert_array_equal(_smooth_inv(quantize(_model(), dataclasses.replace(dynamic, smooth_alpha=0.25), context(0.5))), want[0.25])
    np.testing.assert_array_equal(_smooth_inv(quantize(_model(), dataclasses.replace(dynamic, smooth_alpha=0.25), context(0.0))), want[0.25])


def test_a_toml_config_names_it_and_the_record_reads_back(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text('scheme = "Int8Config"\nsmooth_alpha = 1\n')
    config = QuantConfig.from_toml(path)
    assert config == Int8Config(smooth_alpha=1.0) and isinstance(config.smooth_alpha, float)
    assert config.to_dict()["smooth_alpha"] == 1.0
    assert QuantConfig.from_dict(config.to_dict()) == config
    resolved = default_config("int8").for_spec(_spec(0.5))
    assert QuantConfig.from_dict(resolved.to_dict()) == resolved


def test_a_record_written_before_the_field_still_loads_as_the_family_s():
    old = {"scheme": "Int8Config", "precision": "int8", "version": 2, "per_channel": True, "weight_symmetric": True,
           "calibrate_method": "MinMax", "weight_products_only": True, "activations": "dynamic", "reduce_range": True}
    config = QuantConfig.from_dict(old)
    assert config == Int8Config(activations="dynamic") and config.smooth_alpha is None
    assert config.for_spec(_spec(0.5)).smooth_alpha == 0.5  # what an export of that version did: the spec's


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, math.inf, "0.5", True])
def test_a_bad_alpha_is_refused_in_one_line(value):
    with pytest.raises(GfedgeError) as err:
        QuantConfig.from_dict({"scheme": "Int8Config", "smooth_alpha": value})
    assert "\n" not in str(err.value) and "smooth_alpha" in str(err.value)


def test_a_toml_nan_is_refused(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text('scheme = "Int8Config"\nsmooth_alpha = nan\n')
    with pytest.raises(GfedgeError, match="smooth_alpha nan is not a number from 0 to 1"):
        QuantConfig.from_toml(path)


@pytest.mark.parametrize("value", [-0.5, 2.0, math.nan])
def test_a_family_spec_with_a_bad_alpha_is_a_bug(value):
    with pytest.raises(Bug, match="smooth_alpha"):
        _spec(value)


def test_the_manifest_records_the_alpha_used(tiny_checkpoint, tmp_path):
    """Atlas asks for none (0.0, recorded); with a spec that asks for 0.5 the bundle records it and holds the smoothing;
    a --quant-config that names 0 wins."""
    from geofractal_edge.artifacts import open_bundle
    from geofractal_edge.models.atlas.family import load_exportable
    from geofractal_edge.pipeline import export_bundle

    def export(name, alpha, config=None):
        exportable = load_exportable(tiny_checkpoint)
        exportable = dataclasses.replace(exportable, spec=dataclasses.replace(exportable.spec, smooth_alpha=alpha))
        result = export_bundle(family="atlas", target="host-cpu", precision="int8", out=tmp_path / name, exportable=exportable, config=config)
        bundle = open_bundle(result.path)
        model = onnx.load(str(bundle.model_path))
        return bundle.manifest.quantization["smooth_alpha"], any(i.name.endswith(".smooth_inv") for i in model.graph.initializer)

    assert export("none", 0.0) == (0.0, False)
    assert export("family", 0.5) == (0.5, True)
    path = tmp_path / "q.toml"
    path.write_text('scheme = "Int8Config"\nsmooth_alpha = 0.0\n')
    assert export("config", 0.5, QuantConfig.from_toml(path)) == (0.0, False)
