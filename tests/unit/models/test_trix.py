"""TriX torch side: ternary weights, signatures, routing (flat, hierarchical, ties), lowerings and their ONNX export."""

from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np
import pytest
import torch

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.trix.cluster import build_hierarchy, kmeans
from geofractal_edge.models.trix.config import TrixConfig
from geofractal_edge.models.trix.ffn import TrixFFN, run_tile
from geofractal_edge.models.trix.lm import TrixLM
from geofractal_edge.models.trix.lowering import LOWERINGS, ExportableTrixLM, lower_ffn
from geofractal_edge.models.trix.ternary import ste_ternary, ternary_weights

VOCAB = "abcdefghijklmnopqrstuvwxyz .,\n"
D = 16


def make_ffn(n_tiles: int = 6, *, routing: str = "flat", seed: int = 0, **kwargs) -> TrixFFN:
    torch.manual_seed(seed)
    return TrixFFN(D, 8, n_tiles, routing=routing, **kwargs).eval()


def set_signature(ffn: TrixFFN, tile: int, signature: torch.Tensor) -> None:
    """Give `tile` up weights whose signature is exactly `signature` (every hidden unit votes the same)."""
    with torch.no_grad():
        ffn.up[tile] = signature.float()[None, :].expand(ffn.d_hidden, -1)
    ffn.rebuild_hierarchy()


def tiny_lm(routing: str, *, n_tiles: int = 6, seed: int = 0) -> TrixLM:
    torch.manual_seed(seed)
    config = dataclasses.replace(TrixConfig.tiny(VOCAB), routing=routing, n_tiles=n_tiles)
    return TrixLM(config).eval()


# ---- ternary weights and signatures ---------------------------------------------------------


def test_ternary_weights_are_exactly_minus_one_zero_one() -> None:
    w = torch.randn(5, 7, 9) * torch.tensor([0.01, 1.0, 3.0, 100.0, 0.0])[:, None, None]
    codes, scale = ternary_weights(w)
    assert codes.dtype == torch.int8 and codes.shape == w.shape
    assert set(codes.unique().tolist()) <= {-1, 0, 1}
    assert scale.shape == (5,) and bool((scale > 0).all())
    assert int(codes[4].abs().sum()) == 0  # an all-zero tile stays zero, no NaN
    w_hat, q, s = ste_ternary(w.clone().requires_grad_(True))
    with torch.no_grad():
        exact, _, _ = ste_ternary(w)
    assert torch.equal(exact, codes.float() * scale[:, None, None])
    assert torch.equal(q.to(torch.int8), codes)
    w_leaf = w.clone().requires_grad_(True)
    ste_ternary(w_leaf)[0].sum().backward()
    assert torch.equal(w_leaf.grad, torch.ones_like(w))  # straight-through: identity gradient


def test_signatures_are_read_from_the_weights_and_there_are_no_router_parameters() -> None:
    ffn = make_ffn()
    assert {name for name, _ in ffn.named_parameters()} == {"up", "down"}
    codes, _ = ternary_weights(ffn.up)
    expected = torch.sign(codes.long().sum(dim=1)).float()
    before = ffn.signatures()
    assert torch.equal(before, expected)
    assert set(before.unique().tolist()) <= {-1.0, 0.0, 1.0}
    with torch.no_grad():
        ffn.up[2].neg_()
    after = ffn.signatures()
    assert torch.equal(after[2], -before[2]) and not torch.equal(after[2], before[2])
    keep = [0, 1, 3, 4, 5]
    assert torch.equal(after[keep], before[keep])


# ---- routing ------------------------------------------------------------------------------


def test_hard_routing_is_argmax_and_only_the_winner_computes() -> None:
    ffn = make_ffn()
    x = torch.randn(40, D)
    route = ffn.route(x)
    assert torch.equal(route, (x @ ffn.signatures().T).argmax(dim=1))
    ffn.reset_usage()
    y = ffn(x)  # eval mode: hard path
    up_q, up_s, down_q, down_s = ffn.tile_weights()
    for i in range(len(x)):
        t = int(route[i])
        torch.testing.assert_close(y[i], run_tile(x[i : i + 1], up_q[t], up_s[t], down_q[t], down_s[t])[0], rtol=0, atol=1e-6)
    assert torch.equal(ffn.usage, torch.bincount(route, minlength=ffn.n_tiles))


def _tie_ffn(routing: str) -> tuple[TrixFFN, torch.Tensor]:
    """Tiles 2 and 3 have one signature, tiles 0 and 1 its negation; x = that signature (integers: exact scores)."""
    ffn = make_ffn(4, routing=routing, n_clusters=2, cluster_capacity_factor=1.0)
    sig = torch.tensor([1, -1, 0, 1] * (D // 4))
    for tile, s in ((0, -sig), (1, -sig), (2, sig), (3, sig)):
        set_signature(ffn, tile, s)
    return ffn, sig.float()[None, :]


@pytest.mark.parametrize("routing", ["flat", "hierarchical"])
def test_a_tie_picks_the_lowest_index_in_torch_and_both_lowerings(routing: str) -> None:
    ffn, x = _tie_ffn(routing)
    if routing == "hierarchical":
        assert ffn.cluster_members.tolist() in ([[0, 1], [2, 3]], [[2, 3], [0, 1]])
    zeros = torch.zeros(1, D)  # every score is 0: tile 0 (flat) / cluster 0's first member (hierarchical)
    first = 0 if routing == "flat" else int(ffn.cluster_members[0, 0])
    assert int(ffn.route(x)) == 2 and int(ffn.route(zeros)) == first
    route, margin = ffn.routes(x)
    assert float(margin) == 0.0  # a tie has a zero margin
    for lowering in LOWERINGS:
        lowered = lower_ffn(ffn, lowering)
        assert int(lowered(x)[1]) == 2 and int(lowered(zeros)[1]) == first, lowering


def test_a_tile_no_input_chooses_is_harmless() -> None:
    ffn = make_ffn(4)
    sig0 = ffn.signatures()[0]
    set_signature(ffn, 3, -sig0)  # tile 3 scores -(tile 0's score): never the argmax for x ~ sig0
    x = sig0[None, :] + 0.1 * torch.randn(64, D)
    ffn.reset_usage()
    y = ffn(x)
    assert int(ffn.usage[3]) == 0 and int(ffn.usage.sum()) == 64
    lowered = {name: lower_ffn(ffn, name)(x) for name in LOWERINGS}
    with torch.no_grad():
        ffn.down[3] = torch.randn_like(ffn.down[3]) * 1000.0  # whatever the dead tile would output
    assert torch.equal(ffn(x), y)
    for name in LOWERINGS:
        y2, route2, _ = lower_ffn(ffn, name)(x)
        assert torch.equal(y2, lowered[name][0]) and torch.equal(route2, lowered[name][1])
        torch.testing.assert_close(y2, y, rtol=0, atol=1e-5)


def test_soft_training_path_gives_gradients_to_every_tile_and_a_balance_term() -> None:
    ffn = make_ffn(4).train()
    ffn.temperature = 0.5
    y = ffn(torch.randn(32, D))
    (y.square().mean() + ffn.aux_loss).backward()
    assert ffn.aux_loss is not None and 0.0 < float(ffn.aux_loss.detach()) < 4.0 + 1e-6  # n * sum_t f_t p_t, 1 when balanced
    assert all(float(ffn.up.grad[t].abs().sum()) > 0 and float(ffn.down.grad[t].abs().sum()) > 0 for t in range(4))


@pytest.mark.parametrize("routing", ["flat", "hierarchical"])
def test_cold_soft_routing_becomes_the_hard_route(routing: str) -> None:
    ffn = make_ffn(9, routing=routing)
    ffn.temperature = 1e-4
    x = torch.randn(50, D)
    sigs = ffn.signatures()
    probs = ffn._soft_probs(x, sigs, sigs)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(50))
    assert torch.equal(probs.argmax(dim=1), ffn.route(x))


def test_kmeans_is_deterministic_capacity_limited_and_covers_every_tile() -> None:
    sigs = torch.randint(-1, 2, (37, D)).float()
    a = kmeans(sigs, 6, capacity=9)
    assert torch.equal(a, kmeans(sigs, 6, capacity=9))
    counts = torch.bincount(a, minlength=6)
    assert bool((counts >= 1).all()) and int(counts.max()) <= 9 and int(counts.sum()) == 37
    tables = build_hierarchy(sigs, 6, capacity=9)
    real = tables.pad == 0
    assert sorted(tables.members[real].tolist()) == list(range(37))
    with pytest.raises(GfedgeError):
        kmeans(sigs, 4, capacity=9)  # 4 x 9 < 37


def test_hierarchical_routing_matches_a_brute_force_two_stage_argmax() -> None:
    ffn = make_ffn(20, routing="hierarchical", seed=3)
    x = torch.randint(-3, 4, (300, D)).float()  # integer inputs: exact scores, so many exact ties
    sigs = ffn.signatures()
    owner = ffn.cluster_assignments.tolist()
    cluster_sigs = torch.stack([torch.sign(sigs[[t for t in range(20) if owner[t] == c]].sum(0)) for c in range(ffn.n_clusters)])
    expected = []
    for row in x.tolist():
        cluster_scores = [sum(a * b for a, b in zip(row, cs)) for cs in cluster_sigs.tolist()]
        best_cluster = cluster_scores.index(max(cluster_scores))  # first maximum
        members = [t for t in range(20) if owner[t] == best_cluster]  # ascending
        tile_scores = [sum(a * b for a, b in zip(row, sigs[t].tolist())) for t in members]
        expected.append(members[tile_scores.index(max(tile_scores))])
    assert ffn.route(x).tolist() == expected
    for lowering in LOWERINGS:
        assert lower_ffn(ffn, lowering)(x)[1].tolist() == expected, lowering


# ---- lowerings and export -----------------------------------------------------------------


@pytest.mark.parametrize("routing", ["flat", "hierarchical"])
def test_both_lowerings_reproduce_the_reference_hard_forward(routing: str) -> None:
    model = tiny_lm(routing, n_tiles=7)
    tokens = torch.randint(0, len(VOCAB), (4, 16))
    logits, routes, margins = model.forward_with_routes(tokens)
    torch.testing.assert_close(model(tokens), logits, rtol=0, atol=0)
    assert len(routes.unique()) > 1
    for lowering in LOWERINGS:
        got_logits, got_routes, got_margins = ExportableTrixLM(model, lowering=lowering)(tokens)
        assert got_routes.dtype == torch.int64 and got_routes.shape == (2, 4, 16)
        assert torch.equal(got_routes, routes), lowering
        torch.testing.assert_close(got_logits, logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(got_margins, margins, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("lowering", "routing"), [("compute_all_select", "flat"), ("gather_by_route", "hierarchical")])
def test_onnx_export_reproduces_torch_routes_on_another_batch_size(tmp_path, lowering: str, routing: str) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from geofractal_edge.export.quiet import quiet

    model = tiny_lm(routing, seed=1)
    wrapper = ExportableTrixLM(model, lowering=lowering)
    traced = torch.randint(0, len(VOCAB), (2, 16))
    path = tmp_path / "trix.onnx"
    dims = {"tokens": {0: torch.export.Dim("batch", min=1, max=64), 1: torch.export.Dim("ctx", min=1, max=16)}}
    with contextlib.redirect_stdout(io.StringIO()), quiet(), torch.no_grad():
        torch.onnx.export(wrapper, (traced,), str(path), input_names=["tokens"], output_names=["logits", "routes", "margins"], dynamic_shapes=dims, dynamo=True, external_data=False)
    graph = onnx.load(str(path)).graph
    names = {init.name for init in graph.initializer}
    tables = ("signatures",) if routing == "flat" else ("cluster_signatures", "cluster_member_signatures", "cluster_members", "cluster_pad")
    assert {f"blocks.{i}.ffn.{w}" for i in range(2) for w in ("up_q", "up_scale", "down_q", "down_scale")} <= names
    assert {f"blocks.0.ffn.{w}" for w in tables} <= names  # layer 1's may be merged into layer 0's when equal
    assert all(a.i == 0 for node in graph.node if node.op_type == "ArgMax" for a in node.attribute if a.name == "select_last_index")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tokens = torch.randint(0, len(VOCAB), (5, 11))  # another batch and context than traced
    logits, routes, margins = model.forward_with_routes(tokens)
    got_logits, got_routes, got_margins = session.run(None, {"tokens": tokens.numpy()})
    assert got_routes.dtype == np.int64 and np.array_equal(got_routes, routes.numpy())
    np.testing.assert_allclose(got_logits, logits.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(got_margins, margins.numpy(), rtol=0, atol=1e-4)


# ---- config, data, training, checkpoint ---------------------------------------------------


def test_config_round_trips_and_refuses_bad_values() -> None:
    config = TrixConfig.default(VOCAB)
    assert TrixConfig.from_dict(config.to_dict()) == config
    assert TrixConfig.tiny(VOCAB).clusters == 2
    with pytest.raises(GfedgeError):
        TrixConfig.from_dict({**config.to_dict(), "n_tile": 3})
    with pytest.raises(GfedgeError):
        dataclasses.replace(config, routing="random")
    with pytest.raises(GfedgeError):
        dataclasses.replace(config, n_heads=3)


def test_held_out_split_is_the_tail_and_batches_have_fixed_context() -> None:
    from geofractal_edge.models.trix.data import build_vocab, corpus, encode, eval_windows, random_batch, split

    text = corpus()
    train, held = split(text, 0.1)
    assert train + held == text and abs(len(held) - 0.1 * len(text)) <= 1
    ids = encode(held, build_vocab(text))
    inputs, targets = random_batch(ids, batch_size=3, context=8, generator=torch.Generator().manual_seed(0))
    assert inputs.shape == targets.shape == (3, 8) and torch.equal(inputs[:, 1:], targets[:, :-1])
    inputs, targets = eval_windows(ids[:50], context=8)
    assert inputs.shape == (6, 8) and torch.equal(inputs.flatten()[1:], targets.flatten()[:-1])


def test_train_lm_is_deterministic_and_reports_held_out_bits(tmp_path) -> None:
    from geofractal_edge.models.trix.checkpoint import load_checkpoint, save_checkpoint
    from geofractal_edge.models.trix.data import corpus
    from geofractal_edge.models.trix.train import train_lm

    text = corpus()[:6000]
    config = dataclasses.replace(TrixConfig.tiny("".join(sorted(set(text)))), routing="hierarchical", recluster_every=2)
    seen = []
    model, report = train_lm(config, steps=4, seed=0, text=text, progress=lambda step, total, loss: seen.append((step, total)))
    _, again = train_lm(config, steps=4, seed=0, text=text)
    assert seen == [(i, 4) for i in range(1, 5)]
    assert report["final_loss"] == again["final_loss"] and report["held_out_bpc"] == again["held_out_bpc"]
    assert 0 < report["held_out_bpc"] < 8 and len(report["tile_usage"]) == 2
    path = tmp_path / "trix.safetensors"
    save_checkpoint(path, model, report=report)
    loaded = load_checkpoint(path)
    tokens = torch.randint(0, config.vocab_size, (2, 16))
    assert torch.equal(loaded(tokens), model(tokens))
    assert torch.equal(loaded.blocks[0].ffn.cluster_members, model.blocks[0].ffn.cluster_members)
    assert torch.equal(ExportableTrixLM(model)(tokens)[1], model.forward_with_routes(tokens)[1])  # a trained model lowers too
    with pytest.raises(GfedgeError):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_route_margin_hinge_pushes_token_representations_away_from_ties() -> None:
    torch.manual_seed(0)
    ffn = TrixFFN(16, 8, 4).train()
    x = torch.randn(64, 16, requires_grad=True)
    ffn(x)
    assert ffn.margin_loss is None  # off unless the trainer sets a margin
    ffn.route_margin = 10.0  # above every margin: every token contributes
    ffn(x)
    sigs = ffn.signatures()
    top = torch.topk(x.detach() @ sigs.T, 2, dim=1).values / 4.0  # sqrt(d_model) = 4
    assert ffn.margin_loss.item() == pytest.approx(float(torch.relu(10.0 - (top[:, 0] - top[:, 1])).mean()), rel=1e-5)
    up_before = ffn.up.grad
    ffn.margin_loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the hinge moves the inputs (upstream layers)
    assert up_before is None and ffn.up.grad is None  # signatures are read from the weights: no gradient through them


def test_ten_training_steps_train_instead_of_dividing_by_zero() -> None:
    """10 steps made OneCycleLR's warm-up exactly one step long, a 0/0 in torch (`gfedge train trix --steps 10`)."""
    from geofractal_edge.models.trix.data import corpus
    from geofractal_edge.models.trix.train import WARM_UP, train_lm, warm_up_share

    assert warm_up_share(10) == 0.0 and warm_up_share(11) == WARM_UP == warm_up_share(1500)
    text = corpus()[:6000]
    _, report = train_lm(TrixConfig.tiny("".join(sorted(set(text)))), steps=10, seed=0, text=text)
    assert np.isfinite(report["final_loss"])
