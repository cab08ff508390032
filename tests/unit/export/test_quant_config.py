"""A quantization config from a mapping or a TOML file (`gfedge export --quant-config`), refused in one line when wrong."""

import re
from importlib import resources

import pytest
from onnx import numpy_helper

from geofractal_edge.errors import GfedgeError
from geofractal_edge.export.quantize import QuantConfig, default_config
from geofractal_edge.export.quantize.int8 import Int8Config
from geofractal_edge.targets.precisions import PRECISIONS
from tests.conftest import gfedge


def test_int8_per_tensor_from_a_toml_file(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text('scheme = "Int8Config"\nper_channel = false\n')
    config = QuantConfig.from_toml(path)
    assert config == Int8Config(per_channel=False) and config.precision == "int8"
    assert config.to_dict()["per_channel"] is False


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_manifest_record_builds_the_same_config(precision):
    config = default_config(precision)
    assert QuantConfig.from_dict(config.to_dict()) == config
    assert type(config).from_dict({}) == config  # on a scheme class, the scheme may be left out


@pytest.mark.parametrize(
    "data,needles",
    [
        ({"scheme": "Int9Config"}, ("Int9Config", "did you mean Int8Config", "Fp16Config", "Int4Config")),
        ({"per_channel": False}, ("no scheme", "Int8Config")),
        ({"scheme": "Int8Config", "per_chanel": False}, ("'per_chanel'", "did you mean per_channel", "weight_symmetric", "calibrate_method")),
        ({"scheme": "Int8Config", "per_channel": "no"}, ("'per_channel'", "must be bool", "got str")),
        ({"scheme": "Int4Config", "block_size": 16.0}, ("'block_size'", "must be int", "got float")),
        ({"scheme": "Int4Config", "block_size": True}, ("'block_size'", "must be int", "got bool")),
        ({"scheme": "Int4Config", "block_size": 24}, ("block_size 24", "power of two")),
        ({"scheme": "Int8Config", "calibrate_method": "Mean"}, ("Mean", "MinMax", "Entropy")),
        ({"scheme": "Int8Config", "precision": "int4"}, ("precision", "int4", "Int8Config")),
        ({"scheme": "Int8Config", "version": 9}, ("version", "9")),
    ],
)
def test_a_bad_config_is_one_line_naming_the_field_and_the_allowed_ones(data, needles):
    with pytest.raises(GfedgeError) as err:
        QuantConfig.from_dict(data)
    text = str(err.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, text


def test_a_missing_or_broken_file_is_a_user_error(tmp_path):
    with pytest.raises(GfedgeError, match="does not exist"):
        QuantConfig.from_toml(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("scheme = \n")
    with pytest.raises(GfedgeError, match="not valid TOML"):
        QuantConfig.from_toml(bad)


def test_export_refuses_a_config_that_disagrees_with_the_precision_or_the_target(tmp_path):
    from geofractal_edge.pipeline import export_bundle

    with pytest.raises(GfedgeError, match="fp16 disagrees with the quantization config") as err:
        export_bundle(family="atlas", target="host-cpu", out=tmp_path / "a", precision="fp16", config=Int8Config())
    assert "\n" not in str(err.value)
    shipped = (resources.files("geofractal_edge.targets") / "profiles" / "host-cpu.toml").read_text(encoding="utf-8")
    profile = tmp_path / "fp32-only.toml"
    # The new keys go first: the shipped profile may end in a table ([runtime]) that would swallow them.
    profile.write_text('name = "fp32-only"\nprecisions = ["fp32"]\n' + re.sub(r"(?m)^(name|aliases|precisions) = .*$", "", shipped))
    with pytest.raises(GfedgeError, match="int8 is not allowed on target fp32-only"):
        export_bundle(family="atlas", target=str(profile), out=tmp_path / "b", config=Int8Config(per_channel=False))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_quant_config_errors_are_one_line(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text('scheme = "Int8Config"\nper_chanel = false\n')
    result = gfedge("export", "--target", "host-cpu", "--quant-config", path, "--out", tmp_path / "never")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "per_chanel" in lines[0] and "per_channel" in lines[0], result.stderr
    assert not (tmp_path / "never").exists()


def test_int8_per_tensor_puts_one_scale_on_each_weight(tiny_checkpoint):
    from geofractal_edge.export.quantize import QuantContext, quantize
    from geofractal_edge.export.trace import trace
    from geofractal_edge.models.atlas.family import load_exportable

    exportable = load_exportable(tiny_checkpoint)
    graph = trace(exportable)
    context = QuantContext(spec=exportable.spec, calibration=exportable.calibration())

    def weight_scales(config):
        model = quantize(graph, config, context)
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        return [inits[n.input[1]] for n in model.graph.node
                if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 2]

    per_tensor, per_channel = weight_scales(Int8Config(per_channel=False)), weight_scales(Int8Config())
    assert per_tensor and all(s.size == 1 for s in per_tensor)
    assert any(s.size > 1 for s in per_channel)
