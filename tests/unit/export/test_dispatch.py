"""split_dispatch: a dispatch_by_route graph's per-tile NonZero chains become one sort and one Split per layer, its tile
scales and activation run once per layer, and every output (logits, routes, margins) stays bitwise the same."""

from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import onnx
from onnx import helper
import onnxruntime as ort
import pytest
import torch

from geofractal_edge.export import ternary
from geofractal_edge.export.dispatch import split_dispatch
from geofractal_edge.models.trix.lm import TrixLM
from geofractal_edge.models.trix.spec import trix_spec
from tests.unit.models.test_trix_dispatch_lowering import VOCAB, _export

TILES, LAYERS = 9, 2
# Nodes fewer per layer: per tile 6 index nodes and 3 elementwise ones (2 scales, Gelu) go, and the two Concats;
# 21 come: the sort and split (10), the routes in tile order (1), each scale's gather, unsqueeze and Mul (2 x 3),
# the Gelu, two Concats and the Split back to the tiles.
PER_LAYER = 9 * TILES + 2 - 21


@pytest.fixture(scope="module", params=["flat", "hierarchical"])
def exported(request, tmp_path_factory) -> tuple[TrixLM, onnx.ModelProto]:
    return _export(tmp_path_factory.mktemp("dispatch"), request.param, TILES)


def _batches() -> list[np.ndarray]:
    """Another batch and context than traced, one token (most tiles idle: zero-row splits), a full batch, one symbol repeated."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, len(VOCAB), (5, 11)), rng.integers(0, len(VOCAB), (1, 1)), rng.integers(0, len(VOCAB), (64, 16)),
            np.full((3, 16), 4)]


def _outputs(model: onnx.ModelProto, tokens: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"tokens": tokens.astype(np.int64)})


def _assert_same(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    for tokens in _batches():
        for x, y in zip(_outputs(a, tokens), _outputs(b, tokens), strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


def test_the_float_graph_keeps_only_its_matmuls_per_tile_and_every_output_bit(exported) -> None:
    model, graph = exported
    split = split_dispatch(copy.deepcopy(graph))
    ops, before = Counter(n.op_type for n in split.graph.node), Counter(n.op_type for n in graph.graph.node)
    assert before["NonZero"] == TILES * LAYERS and ops["NonZero"] == 0
    assert ops["TopK"] - before["TopK"] == LAYERS and ops["Gelu"] == LAYERS  # one sort and one activation per layer
    assert ops["MatMul"] == before["MatMul"]  # the tiles' matmuls stay, one per tile and projection
    assert len(graph.graph.node) - len(split.graph.node) == LAYERS * PER_LAYER
    onnx.checker.check_model(split, full_check=True)
    _assert_same(graph, split)
    tokens = torch.from_numpy(_batches()[0])
    _, routes, _ = model.forward_with_routes(tokens)
    assert np.array_equal(_outputs(split, tokens.numpy())[1], routes.numpy())


def test_the_2bit_lowering_applies_it_and_keeps_one_matmulnbits_per_tile_and_every_output_bit(exported, monkeypatch) -> None:
    _, graph = exported
    spec = trix_spec(vocab_size=len(VOCAB), context=16, n_layers=LAYERS)
    lowered = ternary.lower_ternary(graph, spec, dialect="ort")
    monkeypatch.setattr(ternary, "split_dispatch", lambda model, **_: model)
    unsplit = ternary.lower_ternary(graph, spec, dialect="ort")
    tiles = [n for n in lowered.graph.node if n.op_type == "MatMulNBits" and "_q.q2t." in n.input[1]]
    assert len(tiles) == 2 * LAYERS * TILES
    assert not any(n.op_type == "NonZero" for n in lowered.graph.node) and any(n.op_type == "NonZero" for n in unsplit.graph.node)
    assert len(unsplit.graph.node) - len(lowered.graph.node) == LAYERS * PER_LAYER
    onnx.checker.check_model(lowered, full_check=True)
    _assert_same(unsplit, lowered)


def test_a_graph_without_a_dispatch_or_already_split_is_left_as_it_is(exported) -> None:
    _, graph = exported
    once = split_dispatch(copy.deepcopy(graph))
    twice = split_dispatch(copy.deepcopy(once))
    assert [n.SerializeToString() for n in twice.graph.node] == [n.SerializeToString() for n in once.graph.node]


def test_a_tile_value_the_graph_returns_keeps_its_node(exported) -> None:
    """A tile's scale before its activation made a graph output: that layer's tiles keep their bodies, every output still computed."""
    _, graph = exported
    exposed = copy.deepcopy(graph)
    gelu = next(n for n in exposed.graph.node if n.op_type == "Gelu")
    exposed.graph.output.append(helper.make_tensor_value_info(gelu.input[0], onnx.TensorProto.FLOAT, ["rows", "hidden"]))
    split = split_dispatch(copy.deepcopy(exposed))
    onnx.checker.check_model(split, full_check=True)
    made = {out for node in split.graph.node for out in node.output}
    assert all(o.name in made for o in split.graph.output)
    assert sum(n.op_type == "Gelu" for n in split.graph.node) == TILES + LAYERS - 1  # that layer's per tile, the other's once
    _assert_same(exposed, split)


def test_indices_read_by_two_scatters_are_left_alone(exported) -> None:
    """Two ScatterNDs reading one Unsqueeze(Concat(idx)): no layer is rewritten twice (the checker passes, the outputs are the same)."""
    _, graph = exported
    doubled = copy.deepcopy(graph)
    scatter = next(n for n in doubled.graph.node if n.op_type == "ScatterND")
    twin = copy.deepcopy(scatter)
    twin.output[0], twin.name = "twin_out", "twin"
    doubled.graph.node.append(twin)
    doubled.graph.output.append(helper.make_tensor_value_info("twin_out", onnx.TensorProto.FLOAT, ["rows", "width"]))
    split = split_dispatch(copy.deepcopy(doubled))
    onnx.checker.check_model(split, full_check=True)
    assert sum(n.op_type == "NonZero" for n in split.graph.node) == TILES  # that layer keeps its dispatch, the other is split
    _assert_same(doubled, split)


def test_the_2bit_lowering_infers_shapes_once_and_split_dispatch_reads_the_float_graphs(exported, monkeypatch) -> None:
    """onnx cannot infer through MatMulNBits: split_dispatch reads the ranks of the float graph's inference, the only one."""
    _, graph = exported
    spec = trix_spec(vocab_size=len(VOCAB), context=16, n_layers=LAYERS)
    calls, real = [], onnx.shape_inference.infer_shapes
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", lambda model, *a, **kw: calls.append(len(model.graph.node)) or real(model, *a, **kw))
    lowered = ternary.lower_ternary(graph, spec, dialect="ort")
    assert calls == [len(graph.graph.node)]  # once, on the float graph
    assert sum(n.op_type == "Gelu" for n in lowered.graph.node) == LAYERS  # the tiles' bodies hoisted behind their MatMulNBits
