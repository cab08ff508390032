"""int4 mixed precision: the float weights a named output depends on (a routed family's routes) stay 8-bit.

A toy graph: tokens -> Gather(table) -> h; routes = ArgMax(h @ W_route); logits = h @ W_head. Only the
table and W_route are upstream of routes, so only they are kept at 8 bits; W_head stays 4-bit.
"""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from geofractal_edge.errors import GfedgeError
from geofractal_edge.export.passes import check_full
from geofractal_edge.export.quantize import QuantConfig, QuantContext, default_config, quantize
from geofractal_edge.export.quantize import weights
from geofractal_edge.export.quantize.int4 import Int4Config, int8_weights
from geofractal_edge.models.spec import DimRange, ExportSpec, TensorSpec

VOCAB, D, N = 64, 32, 16


def toy_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("table", (VOCAB, D)), ("w_route", (D, N)), ("w_head", (D, N)))]
    inits.append(numpy_helper.from_array(np.zeros(N, np.float32), "b_head"))
    nodes = [
        helper.make_node("Gather", ["table", "tokens"], ["h"], name="embed"),  # [B, D]
        helper.make_node("MatMul", ["h", "w_route"], ["scores"], name="router"),  # [B, N]
        helper.make_node("ArgMax", ["scores"], ["routes"], name="argmax", axis=-1, keepdims=0),  # [B]
        helper.make_node("MatMul", ["h", "w_head"], ["pre"], name="head"),
        helper.make_node("Add", ["pre", "b_head"], ["logits"], name="head_bias"),
    ]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", N]),
                               helper.make_tensor_value_info("routes", TensorProto.INT64, ["batch"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def toy_spec(**fields) -> ExportSpec:
    return ExportSpec(family="toy", inputs=(TensorSpec("tokens", "int64", ("batch",), range=(0, VOCAB - 1)),),
                      outputs=(TensorSpec("logits", "float32", ("batch", N), role="logits"), TensorSpec("routes", "int64", ("batch",), role="routes")),
                      dim_ranges={"batch": DimRange(1, 4, 8)}, task_metric="accuracy", **fields)


def run(model: onnx.ModelProto, tokens: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"tokens": tokens})))


def attr(node: onnx.NodeProto, name: str):
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def test_upstream_is_the_input_cone_of_the_named_outputs():
    model = toy_model()
    assert weights.upstream(model, ("routes",)) == {"table", "w_route"}
    assert weights.upstream(model, ("logits",)) == {"table", "w_head", "b_head"}
    assert weights.upstream(model, ()) == set()
    with pytest.raises(GfedgeError) as err:
        weights.upstream(model, ("route",))
    assert "\n" not in str(err.value) and "'route'" in str(err.value) and "logits, routes" in str(err.value)


def test_the_8_bit_selection_leaves_out_kept_float_weights_and_biases():
    model = toy_model()
    assert int8_weights(model, Int4Config(int8_upstream_of=("routes",)), kept=()) == {"table", "w_route"}
    assert int8_weights(model, Int4Config(int8_upstream_of=("routes",)), kept=("w_route",)) == {"table"}
    assert int8_weights(model, Int4Config(int8_upstream_of=("logits",)), kept=()) == {"table", "w_head"}  # the 1-D bias stays float
    assert int8_weights(model, Int4Config(int8_upstream_of=()), kept=()) == set()


def test_none_takes_the_family_s_choice_and_an_explicit_list_wins():
    spec = toy_spec(int8_upstream_of=("routes",))
    assert default_config("int4").int8_upstream_of is None
    assert default_config("int4").for_spec(spec).int8_upstream_of == ("routes",)
    assert Int4Config(int8_upstream_of=()).for_spec(spec).int8_upstream_of == ()
    assert default_config("int4").for_spec(toy_spec()).int8_upstream_of == ()  # families without routes: all 4-bit
    for precision in ("fp32", "fp16"):  # schemes with no setting left to the family: unchanged
        assert default_config(precision).for_spec(spec) == default_config(precision)


def test_block_size_and_accuracy_level_left_none_take_the_family_s_and_a_config_s_win():
    spec = toy_spec(int4_block_size=32, int4_accuracy_level=4)
    chosen = default_config("int4").for_spec(spec)
    assert (chosen.block_size, chosen.accuracy_level) == (32, 4)
    assert (default_config("int4").for_spec(toy_spec()).block_size, default_config("int4").for_spec(toy_spec()).accuracy_level) == (16, 0)
    explicit = Int4Config(block_size=64, accuracy_level=0).for_spec(spec)
    assert (explicit.block_size, explicit.accuracy_level) == (64, 0)
    assert QuantConfig.from_dict({"scheme": "Int4Config", "block_size": None}) == default_config("int4")  # a record may hold None
    with pytest.raises(GfedgeError, match="must be int"):
        QuantConfig.from_dict({"scheme": "Int4Config", "accuracy_level": 4.0})


def test_the_choice_round_trips_through_a_manifest_record_and_toml(tmp_path):
    config = default_config("int4").for_spec(toy_spec(int8_upstream_of=("routes",)))
    record = json.loads(json.dumps(config.to_dict()))
    assert record["int8_upstream_of"] == ["routes"]
    assert QuantConfig.from_dict(record) == config
    path = tmp_path / "q.toml"
    path.write_text('scheme = "Int4Config"\nint8_upstream_of = []\n')
    assert QuantConfig.from_toml(path) == Int4Config(int8_upstream_of=())


@pytest.mark.parametrize("value", ["routes", [1], [""], 3])
def test_a_bad_selection_is_refused_in_one_line(value):
    with pytest.raises(GfedgeError) as err:
        QuantConfig.from_dict({"scheme": "Int4Config", "int8_upstream_of": value})
    assert "\n" not in str(err.value) and "int8_upstream_of" in str(err.value)


def test_ort_dialect_keeps_the_router_s_weights_8_bit_and_the_head_4_bit():
    model = quantize(toy_model(), default_config("int4"), QuantContext(spec=toy_spec(int8_upstream_of=("routes",)), dialect="ort"))
    bits = {n.name.split("_Q")[0]: attr(n, "bits") for n in model.graph.node if n.op_type == "MatMulNBits"}  # onnxruntime names them router_Q8
    assert bits == {"router": 8, "head": 4}
    inits = {i.name: i for i in model.graph.initializer}
    assert inits["table.int8"].data_type == TensorProto.INT8  # the table's rows stay int8, scaled when gathered
    assert not [i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT and np.prod(i.dims) >= 128]
    all4 = quantize(toy_model(), Int4Config(int8_upstream_of=()), QuantContext(spec=toy_spec(int8_upstream_of=("routes",)), dialect="ort"))
    assert {attr(n, "bits") for n in all4.graph.node if n.op_type == "MatMulNBits"} == {4}
    tokens = np.arange(VOCAB, dtype=np.int64)
    want = run(toy_model(), tokens)
    mixed, four = run(model, tokens), run(all4, tokens)
    err = lambda got: np.abs(got["logits"] - want["logits"]).max()  # noqa: E731
    # The head is 4-bit in both, the table 8-bit only in the mixed one: its logits are closer.
    assert err(mixed) < err(four)
    assert (mixed["routes"] == want["routes"]).mean() >= (four["routes"] == want["routes"]).mean()


def test_dynamic_form_runs_the_router_s_weights_on_the_integer_kernel_and_the_head_4_bit():
    spec = toy_spec(int8_upstream_of=("routes",))
    model = quantize(toy_model(), Int4Config(int8_form="dynamic"), QuantContext(spec=spec, dialect="ort"))
    ops = {n.name: n.op_type for n in model.graph.node}
    assert [attr(n, "bits") for n in model.graph.node if n.op_type == "MatMulNBits"] == [4]  # the head only
    integer = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    assert len(integer) == 1 and "DynamicQuantizeLinear" in ops.values()
    inits = {i.name: i for i in model.graph.initializer}
    weight = inits[integer[0].input[1]]
    assert weight.data_type == TensorProto.INT8 and list(weight.dims) == [D, N]
    assert not [i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT and np.prod(i.dims) >= 128]
    tokens = np.arange(VOCAB, dtype=np.int64)
    want, weight_only = run(toy_model(), tokens), run(quantize(toy_model(), Int4Config(int8_form="weight_only"), QuantContext(spec=spec, dialect="ort")), tokens)
    got = run(model, tokens)
    np.testing.assert_allclose(got["logits"], weight_only["logits"], rtol=0, atol=1e-5)  # the head is the same 4-bit MatMulNBits
    assert (got["routes"] == want["routes"]).mean() >= 0.9


def test_int8_form_follows_the_target_s_int8_and_dynamic_is_refused_for_tensorrt():
    from geofractal_edge.targets.registry import get_target

    assert default_config("int4").for_target(get_target("host-cpu")).int8_form == "dynamic"  # host-cpu's int8 is dynamic
    assert default_config("int4").for_target(get_target("jetson-orin-nano")).int8_form == "weight_only"
    assert Int4Config(int8_form="weight_only").for_target(get_target("host-cpu")).int8_form == "weight_only"  # a config's own wins
    with pytest.raises(GfedgeError) as err:
        Int4Config(int8_form="dynamic").for_target(get_target("jetson-orin-nano"))
    assert "\n" not in str(err.value) and "int8_form" in str(err.value)
    with pytest.raises(GfedgeError):
        QuantConfig.from_dict({"scheme": "Int4Config", "int8_form": "static"})
    with pytest.raises(GfedgeError, match="TensorRT builds int8 from explicit Q/DQ only"):  # quantize without a target: refused too
        quantize(toy_model(), Int4Config(int8_form="dynamic"), QuantContext(spec=toy_spec(int8_upstream_of=("routes",)), dialect="qdq"))


def test_qdq_dialect_keeps_the_router_s_weights_int8_per_output_channel():
    model = quantize(toy_model(), default_config("int4"), QuantContext(spec=toy_spec(int8_upstream_of=("routes",)), dialect="qdq"))
    check_full(model, "the int4 qdq graph")  # not run here: quantize leaves the check to the export
    assert not any(n.domain for n in model.graph.node), "standard ops only"
    inits = {i.name: i for i in model.graph.initializer}
    dq = {n.input[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    route = next(name for name in dq if name.startswith("w_route"))
    assert inits[route].data_type == TensorProto.INT8 and attr(dq[route], "axis") == 1 and list(inits[dq[route].input[1]].dims) == [N]
    head = next(name for name in dq if name.startswith("w_head"))
    assert inits[head].data_type == TensorProto.INT4 and attr(dq[head], "block_size") == 16
    assert inits["table.int8"].data_type == TensorProto.INT8
    tokens = np.arange(VOCAB, dtype=np.int64)
    assert (run(model, tokens)["routes"] == run(toy_model(), tokens)["routes"]).mean() >= 0.9


def test_accuracy_level_is_0_on_qdq_targets_whatever_the_family_asks():
    from geofractal_edge.targets.registry import get_target

    spec = toy_spec(int4_accuracy_level=4)
    assert default_config("int4").for_target(get_target("jetson-orin-nano")).for_spec(spec).accuracy_level == 0  # no MatMulNBits there
    assert default_config("int4").for_target(get_target("host-cpu")).for_spec(spec).accuracy_level == 4
    assert Int4Config(accuracy_level=4).for_target(get_target("jetson-orin-nano")).accuracy_level == 4  # a config's own choice is kept


def stacked_router_model() -> onnx.ModelProto:
    """tokens -> table -> two copies -> MatMul with a stacked [2, D, N] weight -> routes: a stacked weight upstream of routes."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((VOCAB, D)).astype(np.float32), "table"),
             numpy_helper.from_array(rng.standard_normal((2, D, N)).astype(np.float32), "w_stack"),
             numpy_helper.from_array(np.array([0], np.int64), "axis0")]
    nodes = [helper.make_node("Gather", ["table", "tokens"], ["h"], name="embed"),
             helper.make_node("Unsqueeze", ["h", "axis0"], ["hu"], name="unsqueeze"),
             helper.make_node("Concat", ["hu", "hu"], ["hx"], name="concat", axis=0),
             helper.make_node("MatMul", ["hx", "w_stack"], ["scores"], name="router"),
             helper.make_node("ArgMax", ["scores"], ["routes"], name="argmax", axis=-1, keepdims=0)]
    graph = helper.make_graph(nodes, "stacked", [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch"])],
                              [helper.make_tensor_value_info("routes", TensorProto.INT64, [2, "batch"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


@pytest.mark.parametrize("dialect, form", [("ort", "weight_only"), ("ort", "dynamic"), ("qdq", "weight_only")])
def test_a_stacked_weight_upstream_of_routes_stays_8_bit_in_every_form(dialect, form):
    spec = ExportSpec(family="toy", inputs=(TensorSpec("tokens", "int64", ("batch",), range=(0, VOCAB - 1)),),
                      outputs=(TensorSpec("routes", "int64", (2, "batch"), role="routes"),), dim_ranges={"batch": DimRange(1, 4, 8)},
                      task_metric="accuracy", int8_upstream_of=("routes",))
    model = stacked_router_model()
    tokens = np.arange(VOCAB, dtype=np.int64)
    quantized = quantize(model, Int4Config(int8_form=form), QuantContext(spec=spec, dialect=dialect))
    assert "w_stack" not in {i.name for i in quantized.graph.initializer}  # quantized, not left float
    agree = (run(quantized, tokens)["routes"] == run(model, tokens)["routes"]).mean()
    if form == "dynamic":  # one int8 weight per tower on the integer kernel; activations quantized too: near-ties may flip
        assert sum(n.op_type == "DynamicQuantizeMatMul" for n in quantized.graph.node) == 2
        assert agree >= 0.9
    else:
        assert agree == 1.0


def test_the_dynamic_pass_touches_only_the_named_matmuls_and_none_when_none_is_named():
    from geofractal_edge.export.quantize.int8 import Int8Config, dynamic_matmuls

    config = Int8Config(activations="dynamic")
    only_router = dynamic_matmuls(toy_model(), ["router"], config)
    assert [n.name for n in only_router.graph.node if n.op_type == "MatMul"] == ["head"]  # the head left as it was
    untouched = dynamic_matmuls(toy_model(), ["embed"], config)  # a Gather only: onnxruntime would read [] as every node
    assert [n.op_type for n in untouched.graph.node] == [n.op_type for n in toy_model().graph.node]


def test_quantizing_in_a_fresh_process_prints_none_of_onnxruntime_s_notices():
    """onnxruntime's matmul_nbits_quantizer turns the root logger to INFO when first imported (inside the quantize
    call), after which quantize_dynamic's notices ("Quantization parameters for tensor ... not specified") printed."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; sys.path.insert(0, sys.argv[1]); from test_int4_mixed import *; "
            "quantize(toy_model(), Int4Config(int8_form='dynamic'), QuantContext(spec=toy_spec(int8_upstream_of=('routes',)), dialect='ort')); "
            "import logging; logging.getLogger('after').warning('a warning after the block still prints')")
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Quantization parameters" not in done.stderr and "pre-processing" not in done.stderr, done.stderr[-2000:]
    assert "a warning after the block still prints" in done.stderr  # logging is given back as it was
