"""dispatch_by_route: each tile runs on exactly its own tokens; exported, its tile selects become one 2-bit MatMulNBits per tile."""

from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np
import pytest
import torch

from geofractal_edge.models.trix.config import TrixConfig
from geofractal_edge.models.trix.ffn import TrixFFN
from geofractal_edge.models.trix.lm import TrixLM
from geofractal_edge.models.trix.lowering import ExportableTrixLM, lower_ffn

VOCAB = "abcdefghijklmnopqrstuvwxyz .,\n"


def test_dispatch_by_route_equals_the_hard_forward_with_a_lopsided_and_an_idle_tile() -> None:
    torch.manual_seed(0)
    ffn = TrixFFN(16, 8, 5).eval()
    x = torch.randn(40, 16)
    x[:30] = ffn.signatures()[2] + 0.05 * torch.randn(30, 16)  # most tokens to one tile
    y, route, _ = lower_ffn(ffn, "dispatch_by_route")(x)
    assert torch.equal(route, ffn.route(x)) and int(torch.bincount(route).max()) >= 30
    assert len(route.unique()) < 5  # some tile gets no token: an empty dispatch
    torch.testing.assert_close(y, ffn.forward_hard(x), rtol=0, atol=1e-5)
    y1, _, _ = lower_ffn(ffn, "dispatch_by_route")(x[:1])
    torch.testing.assert_close(y1, ffn.forward_hard(x[:1]), rtol=0, atol=1e-5)


def _export(tmp_path, routing: str, n_tiles: int):
    onnx = pytest.importorskip("onnx")
    from geofractal_edge.export.quiet import quiet

    torch.manual_seed(1)
    config = dataclasses.replace(TrixConfig.tiny(VOCAB), routing=routing, n_tiles=n_tiles)
    model = TrixLM(config).eval()
    path = tmp_path / "trix.onnx"
    dims = {"tokens": {0: torch.export.Dim("batch", min=1, max=64), 1: torch.export.Dim("ctx", min=1, max=16)}}
    with contextlib.redirect_stdout(io.StringIO()), quiet(), torch.no_grad():
        torch.onnx.export(ExportableTrixLM(model, lowering="dispatch_by_route"), (torch.randint(0, len(VOCAB), (2, 16)),), str(path),
                          input_names=["tokens"], output_names=["logits", "routes", "margins"], dynamic_shapes=dims, dynamo=True,
                          external_data=False)
    return model, onnx.load(str(path))


@pytest.mark.parametrize("routing", ["flat", "hierarchical"])
def test_dispatch_by_route_exports_one_2bit_matmul_per_tile_and_reproduces_torch_on_another_batch(tmp_path, routing: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    from geofractal_edge.export.ternary import lower_ternary
    from geofractal_edge.models.trix.spec import trix_spec

    n = 9
    model, graph = _export(tmp_path, routing, n)
    spec = trix_spec(vocab_size=len(VOCAB), context=16, n_layers=2)
    lowered = lower_ternary(graph, spec, dialect="ort")
    tiles = [node for node in lowered.graph.node if node.op_type == "MatMulNBits" and "_q.q2t." in node.input[1]]
    assert len(tiles) == 2 * 2 * n  # per tile, projection and layer: the tiles stay 2-bit in place
    assert not [i.name for i in lowered.graph.initializer if i.name.endswith("_q")], "no float copy of a tile"
    assert not [node for node in lowered.graph.node if node.op_type == "GatherBlockQuantized" and "_q" in node.input[0]]
    tokens = torch.randint(0, len(VOCAB), (5, 11))  # another batch and context than traced
    logits, routes, _ = model.forward_with_routes(tokens)
    for g in (graph, lowered):
        session = ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"])
        got_logits, got_routes, _ = session.run(None, {"tokens": tokens.numpy()})
        assert np.array_equal(got_routes, routes.numpy())
        np.testing.assert_allclose(got_logits, logits.numpy(), rtol=0, atol=1e-4)


def test_without_packing_keep_float_the_routing_signatures_stay_float(tmp_path) -> None:
    """A bundle that runs the lookup-table kernel (int8 activations in every 2-bit MatMulNBits) routes in float."""
    from geofractal_edge.export.ternary import lower_ternary
    from geofractal_edge.models.trix.spec import trix_spec

    _, graph = _export(tmp_path, "flat", 9)
    spec = trix_spec(vocab_size=len(VOCAB), context=16, n_layers=2)
    packed = lower_ternary(graph, spec, dialect="ort")
    kept = lower_ternary(graph, spec, dialect="ort", pack_keep_float=False)
    assert any("signatures" in node.input[1] for node in packed.graph.node if node.op_type == "MatMulNBits")
    assert not any("signatures" in node.input[1] for node in kept.graph.node if node.op_type == "MatMulNBits")
    assert {f"blocks.{i}.ffn.signatures" for i in range(2)} <= {i.name for i in kept.graph.initializer}


def test_tile_accuracy_level_reaches_every_tile_product_and_no_routing_product(tmp_path) -> None:
    """int8 activations for the tiles (accuracy_level 4) where asked; the routing signatures keep float arithmetic."""
    ort = pytest.importorskip("onnxruntime")
    from geofractal_edge.export.ternary import lower_ternary
    from geofractal_edge.models.trix.spec import trix_spec

    model, graph = _export(tmp_path, "hierarchical", 9)
    spec = trix_spec(vocab_size=len(VOCAB), context=16, n_layers=2, lowering="dispatch_by_route")
    lowered = lower_ternary(graph, spec, dialect="ort", tile_accuracy_level=4)
    products = [(node.input[1], {a.name: a.i for a in node.attribute}.get("accuracy_level", 0))
                for node in lowered.graph.node if node.op_type == "MatMulNBits"]  # one entry per node
    tiles = [level for name, level in products if "_q.q2t." in name]
    routing = [level for name, level in products if "signatures" in name]
    assert len(tiles) == 2 * 2 * 9 and set(tiles) == {4}
    assert routing and set(routing) == {0}
    assert len(products) == len(tiles) + len(routing), "every 2-bit product is a tile's or a router's"
    plain = lower_ternary(graph, spec, dialect="ort")
    assert not any(a.name == "accuracy_level" for node in plain.graph.node for a in node.attribute if node.op_type == "MatMulNBits")
    tokens = torch.randint(0, len(VOCAB), (3, 16))
    logits, routes, _ = model.forward_with_routes(tokens)
    run = lambda g: ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"tokens": tokens.numpy()})  # noqa: E731
    got, got_routes, _ = run(lowered)
    assert not np.array_equal(got, run(plain)[0]), "onnxruntime ran the tiles' int8-activation kernel (blocks of 32 take it)"
    same = (got_routes == routes.numpy()).all(axis=0)  # [B, T]: tokens every layer routed as torch did
    assert same.mean() >= 0.9, same.mean()  # an untrained model has near-ties; int8 noise in a tile flips a few of the next layer's
    assert np.abs(got - logits.numpy())[same].max() < 0.05 * np.abs(logits.numpy()).max()  # int8 activations: close, not exact


def test_tile_accuracy_level_is_refused_for_the_qdq_dialect(tmp_path) -> None:
    from geofractal_edge.errors import Bug
    from geofractal_edge.export.ternary import lower_ternary
    from geofractal_edge.models.trix.spec import trix_spec

    _, graph = _export(tmp_path, "flat", 9)
    with pytest.raises(Bug, match="no MatMulNBits"):
        lower_ternary(graph, trix_spec(vocab_size=len(VOCAB), context=16, n_layers=2), dialect="qdq", tile_accuracy_level=4)


def test_host_cpu_dispatches_many_tiles_and_tensorrt_gathers_them() -> None:
    from geofractal_edge.models.trix.family import FOLDED_ELEMENTS, choose_lowering
    from geofractal_edge.targets import get_target

    cpu, orin = get_target("host-cpu"), get_target("jetson-orin")
    many = dataclasses.replace(TrixConfig.tiny(VOCAB), n_tiles=max(cpu.compute_all_max_tiles, orin.compute_all_max_tiles) + 1)
    assert choose_lowering(TrixConfig.tiny(VOCAB), cpu) == "compute_all_select"
    assert choose_lowering(many, cpu) == "dispatch_by_route"
    assert orin.weight_dialect == "qdq" and choose_lowering(many, orin) == "gather_by_route"
    small = dataclasses.replace(many, d_model=8, d_hidden=8)  # tiles the exporter folds into constants: gather them
    assert small.n_tiles * 64 <= FOLDED_ELEMENTS and choose_lowering(small, cpu) == "gather_by_route"


def test_the_folding_limit_is_the_installed_exporters() -> None:
    """FOLDED_ELEMENTS copies onnxscript's constant-folding input limit: if an upgrade moves it, this fails first."""
    folding = pytest.importorskip("onnxscript.optimizer._constant_folding")
    from geofractal_edge.models.trix.family import FOLDED_ELEMENTS

    assert folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT == FOLDED_ELEMENTS


def test_dispatch_on_tiles_the_exporter_would_fold_is_refused_in_one_line() -> None:
    from geofractal_edge.errors import GfedgeError
    from geofractal_edge.models.trix.family import exportable_from_model

    small = TrixLM(dataclasses.replace(TrixConfig.tiny(VOCAB), n_tiles=9, d_model=8, d_hidden=8, n_heads=2)).eval()
    with pytest.raises(GfedgeError, match="dispatch_by_route needs tile tensors"):
        exportable_from_model(small, name="t", source={}, lowering="dispatch_by_route", text=VOCAB * 200)
