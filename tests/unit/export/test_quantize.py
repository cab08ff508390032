"""What each precision puts in the graph, read back from the bundle's ONNX."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from geofractal_edge.errors import GfedgeError
from geofractal_edge.export.passes import check_full
from geofractal_edge.export.quantize import default_config


def graph(bundle):
    return onnx.load(str(bundle / "model.onnx"))


def test_shared_block_weights_are_stored_once(bundle_factory, tiny_checkpoint):
    from geofractal_edge.models.atlas.checkpoint import load_checkpoint

    library, _ = load_checkpoint(tiny_checkpoint)
    model = graph(bundle_factory("fp32"))
    params = sum(p.numel() for p in library.core.parameters())
    stored = sum(int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) >= 1)
    # All T iterations read one copy of the block: stored floats ~ parameters, not T x the block.
    assert stored < params + 1024
    assert library.config.T >= 2


def test_int4_for_tensorrt_is_blocked_dequantize_linear_with_zero_point_zero(bundle_factory):
    model = graph(bundle_factory("int4", "jetson-orin-nano"))  # a "qdq" target
    assert model.opset_import[0].version >= 21
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert dq and not any(n.domain for n in model.graph.node), "only standard ops, no MatMulNBits"
    inits = {i.name: i for i in model.graph.initializer}
    for node in dq:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["block_size"] == _recorded_block_size(bundle_factory("int4", "jetson-orin-nano"))
        assert inits[node.input[0]].data_type == onnx.TensorProto.INT4
        assert len(node.input) < 3 or not np.any(numpy_helper.to_array(inits[node.input[2]]))
    assert not [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and np.prod(i.dims) >= 16 * 16]


def _recorded_block_size(bundle) -> int:
    """The block size the manifest records: the family's (the fixture's Atlas: ExportSpec's default) unless a config named one."""
    from geofractal_edge.artifacts import open_bundle
    from geofractal_edge.models.spec import ExportSpec

    recorded = open_bundle(bundle).manifest.quantization["block_size"]
    assert recorded == ExportSpec.int4_block_size and default_config("int4").block_size is None
    return recorded


def _matmul_nbits(model):
    return [n for n in model.graph.node if n.op_type == "MatMulNBits"]


def test_int4_for_onnxruntime_is_matmul_nbits_and_stays_4_bit_in_the_session(bundle_factory, tmp_path):
    """host-cpu ("ort" dialect): MatMulNBits, and onnxruntime's optimizer must not fold the weights back to float."""
    import onnxruntime as ort

    bundle = bundle_factory("int4")
    model = graph(bundle)
    nodes = _matmul_nbits(model)
    assert nodes and not [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert (attrs["bits"], attrs["block_size"]) == (4, _recorded_block_size(bundle))
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(bundle / "model.onnx"), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    inits = {i.name: i for i in optimized.graph.initializer}
    kept = _matmul_nbits(optimized)
    assert len(kept) == len(nodes)
    smallest = min(next(a.i for a in n.attribute if a.name == "K") * next(a.i for a in n.attribute if a.name == "N") for n in kept)
    assert all(inits[n.input[1]].data_type == onnx.TensorProto.UINT8 for n in kept)
    floats = [(i.name, list(i.dims)) for i in optimized.graph.initializer
              if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) and np.prod(i.dims) >= smallest]
    assert not floats, f"a weight was folded back to float: {floats}"


def test_int4_accuracy_level_reaches_every_matmul_nbits_and_scales_can_stay_float32(bundle_factory):
    from geofractal_edge.export.quantize import QuantContext, quantize
    from geofractal_edge.export.quantize.int4 import Int4Config
    from geofractal_edge.models.atlas.spec import atlas_spec

    fp32 = graph(bundle_factory("fp32"))
    key_dim = next(i for i in fp32.graph.input if i.name == "key").type.tensor_type.shape.dim[0].dim_value
    spec = atlas_spec(key_dim=key_dim, vocab_size=fp32.graph.output[0].type.tensor_type.shape.dim[1].dim_value)
    model = quantize(fp32, Int4Config(accuracy_level=4, scale_dtype="float32"), QuantContext(spec=spec, dialect="ort"))
    check_full(model, "the int4 graph")  # quantize leaves the check to the export
    nodes = _matmul_nbits(model)
    assert nodes and all(onnx.helper.get_attribute_value(a) == 4 for n in nodes for a in n.attribute if a.name == "accuracy_level")
    assert all(len([a for a in n.attribute if a.name == "accuracy_level"]) == 1 for n in nodes)
    assert not [n for n in model.graph.node if n.op_type == "Cast"]  # float32 scales feed the operators directly
    with pytest.raises(GfedgeError, match="accuracy_level 5"):
        Int4Config(accuracy_level=5)


def test_int4_leaves_keep_float_weights_in_float(bundle_factory):
    import dataclasses

    from geofractal_edge.export.quantize import QuantContext, quantize
    from geofractal_edge.models.atlas.spec import atlas_spec

    fp32 = graph(bundle_factory("fp32"))
    key_dim = next(i for i in fp32.graph.input if i.name == "key").type.tensor_type.shape.dim[0].dim_value
    vocab = fp32.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    spec = dataclasses.replace(atlas_spec(key_dim=key_dim, vocab_size=vocab), keep_float=("block.weight",))
    model = quantize(fp32, default_config("int4"), QuantContext(spec=spec, calibration=None))
    check_full(model, "the int4 graph")  # quantize leaves the check to the export
    # The Gemm -> MatMul rewrite (which transposes weights) must not move the kept weight into int4.
    floats = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    int4 = [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT4]
    assert any(n.startswith("block.weight") for n in floats)
    assert int4 and not any(n.startswith("block.weight") for n in int4)


def test_int8_quantizes_weight_products_and_leaves_attention_products_float(trix_bundle_factory):
    model = onnx.load(str(trix_bundle_factory("int8") / "model.onnx"), load_external_data=False)  # tiles are 2-bit packed
    produced_by = {o: n for n in model.graph.node for o in n.output}
    constants = {i.name for i in model.graph.initializer}

    def from_dequantize(name):
        return name in produced_by and produced_by[name].op_type == "DequantizeLinear"

    def weight_operand(node):  # static: a DequantizeLinear of a constant; dynamic (host-cpu): MatMulInteger's int8 constant
        return node.op_type == "MatMulInteger" and node.input[1] in constants or \
            any(from_dequantize(i) and produced_by[i].input[0] in constants for i in node.input[:2])

    matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "MatMulInteger")]
    with_weights = [n for n in matmuls if weight_operand(n)]
    activation_products = [n for n in matmuls if not weight_operand(n) and not any(i in constants for i in n.input[:2])]
    assert with_weights, "projections with weights are int8"
    assert activation_products, "the TriX LM has attention products Q.K^T and P.V"
    for node in activation_products:  # Q.K^T and P.V: no quantize/dequantize on either operand
        assert not any(from_dequantize(i) for i in node.input[:2]), node.name


def test_int8_for_tensorrt_is_explicit_symmetric_qdq_per_channel(bundle_factory):
    model = graph(bundle_factory("int8", "jetson-orin-nano"))  # a "qdq" target: static activations
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = [inits[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 2]
    assert weights and all(w.dtype == np.int8 for w in weights)
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    assert all(not np.any(z) for z in zero_points)
    per_channel = [inits[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[1]) is not None and inits[n.input[1]].size > 1]
    assert per_channel


def test_fp16_keeps_the_fourier_features_in_float32(bundle_factory):
    model = graph(bundle_factory("fp16"))
    sin = next(n for n in model.graph.node if n.op_type == "Sin")
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.input)}
    assert types[sin.input[0]] == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)


def test_unsupported_precision_names_the_ones_we_have():
    with pytest.raises(GfedgeError, match="fp32"):
        default_config("fp8")


def test_manifest_records_quantization_config(bundle_factory):
    from geofractal_edge.artifacts import open_bundle

    manifest = open_bundle(bundle_factory("int4")).manifest.to_dict()
    # int8_upstream_of as resolved for the family: Atlas has no routes, so none of its weights stays 8-bit
    assert manifest["quantization"] == {"scheme": "Int4Config", "precision": "int4", "version": 3, "block_size": 16, "symmetric": True,
                                        "scale_dtype": "float16", "accuracy_level": 0, "int8_upstream_of": [], "int8_form": "dynamic",
                                        "tile_accuracy_level": 0}
    assert manifest["weight_dialect"] == manifest["target"]["weight_dialect"] == "ort"


@pytest.mark.parametrize("scheme", ["Int8Config", "Int4Config"])
def test_tile_accuracy_level_is_0_or_4_on_onnxruntime_targets_only(scheme):
    from geofractal_edge.export.quantize.base import QuantConfig
    from geofractal_edge.targets import get_target

    assert QuantConfig.from_dict({"scheme": scheme}).tile_accuracy_level == 0  # a record without it: float tiles, as before
    config = QuantConfig.from_dict({"scheme": scheme, "tile_accuracy_level": 4})
    assert config.for_target(get_target("host-cpu")).tile_accuracy_level == 4
    assert config.tile_level == 4 and QuantConfig.from_dict({"scheme": scheme}).tile_level == 0  # what export reads
    assert all(QuantConfig.from_dict({"scheme": other}).tile_level == 0 for other in ("Fp32Config", "Fp16Config"))  # no tiles setting
    with pytest.raises(GfedgeError, match="is not 0 or 4") as bad:
        QuantConfig.from_dict({"scheme": scheme, "tile_accuracy_level": 2})
    assert "int8 activations" in bad.value.fix
    with pytest.raises(GfedgeError, match="tile_accuracy_level 4.0 is not 0 or 4"):  # a float would reach the graph as a float attribute
        type(config)(tile_accuracy_level=4.0)
    with pytest.raises(GfedgeError, match="MatMulNBits setting; target jetson-agx-orin builds TensorRT engines") as trt:
        config.for_target(get_target("jetson-orin"))
    assert "drop tile_accuracy_level" in trt.value.fix


def test_tile_accuracy_level_for_a_family_without_tiles_is_refused_before_any_file(tmp_path):
    from geofractal_edge.export.quantize.int8 import Int8Config
    from geofractal_edge.pipeline import export_bundle

    with pytest.raises(GfedgeError, match="family atlas has no ternary tiles") as caught:
        export_bundle(family="atlas", target="host-cpu", out=tmp_path / "b", config=Int8Config(tile_accuracy_level=4))
    assert "--family trix" in caught.value.fix and not (tmp_path / "b").exists()


# ---- the registry: one default scheme per precision, dispatch on the config's type -------------


def test_every_precision_has_exactly_one_default_scheme_and_no_scheme_is_outside_the_list():
    from geofractal_edge.export.quantize import precisions, schemes
    from geofractal_edge.targets.precisions import PRECISIONS

    assert precisions() == PRECISIONS
    defaults = [type(default_config(p)) for p in PRECISIONS]
    assert [c.precision for c in defaults] == list(PRECISIONS) and len(set(defaults)) == len(PRECISIONS)
    assert all(c.precision in PRECISIONS for c in schemes().values())


def test_register_refuses_a_second_default_and_an_unlisted_precision():
    import dataclasses
    from typing import ClassVar

    from geofractal_edge.errors import Bug
    from geofractal_edge.export.quantize import QuantConfig, register, schemes

    @dataclasses.dataclass(frozen=True)
    class OtherInt8Config(QuantConfig):
        precision: ClassVar[str] = "int8"

    @dataclasses.dataclass(frozen=True)
    class Bf16Config(QuantConfig):
        precision: ClassVar[str] = "bf16"

    with pytest.raises(Bug, match="both the default int8 scheme"):
        register(OtherInt8Config)(lambda model, config, context: model)
    with pytest.raises(Bug, match="bf16"):
        register(Bf16Config, default=False)(lambda model, config, context: model)
    assert "OtherInt8Config" not in schemes() and "Bf16Config" not in schemes()


def test_a_new_scheme_file_is_found_without_editing_a_list(monkeypatch, tmp_path):
    import sys

    import geofractal_edge.export.quantize as package
    from geofractal_edge.export.quantize import QuantContext, base, quantize

    (tmp_path / "extra_scheme.py").write_text(
        "from dataclasses import dataclass\n"
        "from typing import ClassVar\n"
        "from geofractal_edge.export.quantize.base import QuantConfig, register\n\n"
        "@dataclass(frozen=True)\n"
        "class ExtraFp32Config(QuantConfig):\n"
        "    precision: ClassVar[str] = 'fp32'\n"
        "    tag: str = 'x'\n\n"
        "@register(ExtraFp32Config, default=False)\n"
        "def to_extra(model, config, context):\n"
        "    model.doc_string = config.tag\n"
        "    return model\n"
    )
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    monkeypatch.setattr(base, "_TRANSFORMS", dict(base._TRANSFORMS))
    monkeypatch.setattr(base, "_DEFAULTS", dict(base._DEFAULTS))
    monkeypatch.delitem(sys.modules, "geofractal_edge.export.quantize.extra_scheme", raising=False)
    base._load_schemes.cache_clear()
    try:
        config = base.QuantConfig.from_dict({"scheme": "ExtraFp32Config", "tag": "found"})
        model = onnx.helper.make_model(onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["a"], ["b"])], "g",
            [onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1])]))
        assert quantize(model, config, QuantContext(spec=None)).doc_string == "found"  # dispatched on the type
        assert type(default_config("fp32")).__name__ == "Fp32Config"
    finally:
        base._load_schemes.cache_clear()
        sys.modules.pop("geofractal_edge.export.quantize.extra_scheme", None)


def test_an_unregistered_config_type_is_a_bug():
    import dataclasses
    from typing import ClassVar

    from geofractal_edge.errors import Bug
    from geofractal_edge.export.quantize import QuantConfig, QuantContext, quantize

    @dataclasses.dataclass(frozen=True)
    class Unbound(QuantConfig):
        precision: ClassVar[str] = "fp32"

    with pytest.raises(Bug, match="Unbound is not a registered"):
        quantize(onnx.ModelProto(), Unbound(), QuantContext(spec=None))
