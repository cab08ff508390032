"""group_by_route: the TriX lowering that moves tokens, not weights, exported to ONNX and lowered to 2-bit tiles."""

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


def test_group_by_route_equals_the_hard_forward_with_a_lopsided_and_an_idle_tile() -> None:
    torch.manual_seed(0)
    ffn = TrixFFN(16, 8, 5).eval()
    x = torch.randn(40, 16)
    x[:30] = ffn.signatures()[2] + 0.05 * torch.randn(30, 16)  # most tokens to one tile: W >> N / n
    y, route, _ = lower_ffn(ffn, "group_by_route")(x)
    assert torch.equal(route, ffn.route(x)) and int(torch.bincount(route).max()) >= 30
    assert len(route.unique()) < 5  # some tile gets no token
    torch.testing.assert_close(y, ffn.forward_hard(x), rtol=0, atol=1e-5)
    y1, _, _ = lower_ffn(ffn, "group_by_route")(x[:1])  # one token: W = 1
    torch.testing.assert_close(y1, ffn.forward_hard(x[:1]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("routing", ["flat", "hierarchical"])
def test_group_by_route_exports_runs_2bit_and_reproduces_torch_on_another_batch(tmp_path, routing: str) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from geofractal_edge.export.quiet import quiet
    from geofractal_edge.export.ternary import lower_ternary
    from geofractal_edge.models.trix.spec import trix_spec

    torch.manual_seed(1)
    config = dataclasses.replace(TrixConfig.tiny(VOCAB), routing=routing, n_tiles=9)
    model = TrixLM(config).eval()
    wrapper = ExportableTrixLM(model, lowering="group_by_route")
    path = tmp_path / "trix.onnx"
    dims = {"tokens": {0: torch.export.Dim("batch", min=1, max=64), 1: torch.export.Dim("ctx", min=1, max=16)}}
    with contextlib.redirect_stdout(io.StringIO()), quiet(), torch.no_grad():
        torch.onnx.export(wrapper, (torch.randint(0, len(VOCAB), (2, 16)),), str(path), input_names=["tokens"],
                          output_names=["logits", "routes", "margins"], dynamic_shapes=dims, dynamo=True, external_data=False)
    spec = trix_spec(vocab_size=len(VOCAB), context=16, n_layers=2)
    lowered = lower_ternary(onnx.load(str(path)), spec, dialect="ort")
    ops = [node.op_type for node in lowered.graph.node]
    assert ops.count("MatMulNBits") >= 2 * 2 * 9  # one per tile, projection and layer: the tiles stay 2-bit in place
    assert "GatherBlockQuantized" not in ops or routing == "hierarchical"  # only routing tables may be gathered
    tokens = torch.randint(0, len(VOCAB), (5, 11))  # another batch and context than traced
    logits, routes, _ = model.forward_with_routes(tokens)
    for graph in (onnx.load(str(path)), lowered):
        session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        got_logits, got_routes, _ = session.run(None, {"tokens": tokens.numpy()})
        assert np.array_equal(got_routes, routes.numpy())
        np.testing.assert_allclose(got_logits, logits.numpy(), rtol=0, atol=1e-4)
