"""Collective torch side: Cantor prior, top-K routing, streams, lowering, checkpoints, data, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geofractal_edge.errors import GfedgeError
from geofractal_edge.models.collective import CollectiveConfig, RouterCollective, StreamConfig, fit, load_checkpoint, lower, save_checkpoint
from geofractal_edge.models.collective.data import digits_split, shift_images
from geofractal_edge.models.collective.lowering import group_towers
from geofractal_edge.models.collective.router import RouterBlock, cantor_prior, route_gather, route_topk
from geofractal_edge.models.collective.streams import projection_matrix, view_gradients

MIXED = (
    StreamConfig("pixels"),
    StreamConfig("conv_a", kind="conv", channels=(4, 8)),
    StreamConfig("projections", view="projections"),
    StreamConfig("pixels_b"),
    StreamConfig("conv_b", kind="conv", channels=(4, 8)),
    StreamConfig("gradients", view="gradients"),
)


def small(streams=MIXED, **changes) -> CollectiveConfig:
    return CollectiveConfig.tiny().replace(streams=tuple(streams), **changes)


def build(config: CollectiveConfig, seed: int = 0) -> RouterCollective:
    torch.manual_seed(seed)
    return RouterCollective(config).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return digits_split().x_test[:40]


# ---- router pieces -----------------------------------------------------------------------------


def test_cantor_prior_is_a_symmetric_similarity_with_unit_diagonal() -> None:
    prior = cantor_prior(4, 2)
    assert prior.shape == (8, 8)
    assert torch.equal(prior, prior.T)
    assert torch.equal(torch.diagonal(prior), torch.ones(8))
    assert float(prior.min()) > 0.0 and float(prior.max()) == 1.0
    # slot (r, c) -> Cantor index ((r + c)(r + c + 1)) / 2 + c: (0,0) -> 0, (0,1) -> 2, (3,1) -> 11
    assert float(prior[0, 1]) == pytest.approx(1.0 - 2.0 / 12.0)
    assert float(prior[0, 7]) == pytest.approx(1.0 - 11.0 / 12.0) == pytest.approx(float(prior.min()))


def test_masked_topk_routing_equals_the_gather_form() -> None:
    torch.manual_seed(0)
    scores, values = torch.randn(3, 5, 8, 8), torch.randn(3, 5, 8, 16)
    for k in (1, 3, 8):
        out, routes, weights, margin = route_topk(scores, values, k)
        ref_out, ref_routes, ref_weights = route_gather(scores, values, k)
        torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
        assert torch.equal(routes, ref_routes)
        torch.testing.assert_close(weights, ref_weights)
        assert margin.shape == (3, 5, 8) and bool((margin >= 0).all())
    # K < S: the kept scores' softmax puts zero weight anywhere else
    out, routes, _, _ = route_topk(scores, torch.eye(8).expand(3, 5, 8, 8), 2)
    assert torch.equal((out > 0).sum(-1), torch.full((3, 5, 8), 2))


def test_fingerprints_change_routing_and_can_be_switched_off() -> None:
    x = torch.randn(4, 4, 32)
    config = CollectiveConfig.tiny()
    torch.manual_seed(0)
    router = RouterBlock(config).eval()
    with torch.no_grad():
        base = router(x)[0]
        router.fingerprint.add_(torch.randn_like(router.fingerprint))
        assert not torch.allclose(router(x)[0], base)  # the identity vector steers the router
    plain = RouterBlock(config.replace(fingerprints=False))
    assert plain.fingerprint is None and "key_bias" not in plain.params()


def test_views_see_the_image_differently() -> None:
    lines = projection_matrix()
    assert lines.shape == (64, 46) and torch.equal(lines.sum(dim=1), torch.full((64,), 4.0))  # row, col, 2 diagonals
    img = torch.zeros(1, 64)
    img[0, 9] = 1.0  # pixel (1, 1)
    grads = view_gradients(img, None)
    assert grads.shape == (1, 224) and float(grads.sum()) == 4.0  # one rising and one falling edge per axis


# ---- the collective and its lowering -----------------------------------------------------------


@pytest.mark.parametrize("changes", [{}, {"fingerprints": False}, {"mailbox": False, "fusion": "mean"}])
def test_lowering_matches_the_training_collective(images, changes) -> None:
    collective = build(small(**changes))
    wide = lower(collective)
    with torch.no_grad():
        logits, info = collective(images)
        wide_logits, routes, margins = wide(images)
    torch.testing.assert_close(wide_logits, logits, rtol=1e-4, atol=1e-5)
    assert torch.equal(routes, info["routes"]) and routes.dtype == torch.int64
    assert routes.shape == (len(MIXED), len(images), 4, 2)
    torch.testing.assert_close(margins, info["margins"], rtol=1e-3, atol=1e-4)
    naive = lower(collective, stack=False)
    with torch.no_grad():
        torch.testing.assert_close(naive(images)[0], logits, rtol=1e-4, atol=1e-5)


def test_identical_towers_are_grouped_and_heterogeneous_ones_kept_apart() -> None:
    collective = build(small())
    assert group_towers(collective) == [[0, 3], [1, 4], [2], [5]]
    wide = lower(collective)
    assert len(wide.fronts) == 4 and wide.reorder
    assert all(not p.requires_grad for p in wide.parameters())


def test_forward_hands_back_the_routes_and_keeps_no_state(images) -> None:
    collective = build(small())
    with torch.no_grad():
        _, info = collective(images)
    routes = info["routes"]  # the last forward's routing posts, for diagnostics, with no cache on the model
    assert routes.shape == (len(MIXED), len(images), 4, 2) and routes.dtype == torch.int64
    assert torch.equal(routes, routes.sort(dim=-1).values)

    def tensors(value) -> bool:
        return isinstance(value, torch.Tensor) or isinstance(value, dict) and any(isinstance(v, torch.Tensor) for v in value.values())

    held = [f"{n}.{k}" for n, m in collective.named_modules() for k, v in vars(m).items() if k not in ("_parameters", "_buffers") and tensors(v)]
    assert not held, held  # tensors outside parameters and buffers would be per-forward state


def test_fit_trains_and_reports_in_one_format() -> None:
    split = digits_split()
    config = small(streams=MIXED[:2], epochs=1, batch_size=64)
    collective = build(config).train()
    before = {n: p.detach().clone() for n, p in collective.named_parameters()}
    report = fit(collective, (split.x_train[:256], split.y_train[:256]), (split.x_test[:64], split.y_test[:64]))
    assert {"accuracy", "history", "epochs", "steps", "seconds", "world_size", "final_loss"} <= set(report)
    assert report["steps"] == 4 and report["world_size"] == 1 and len(report["history"]) == 1
    assert any(not torch.equal(before[n], p) for n, p in collective.named_parameters())


# ---- checkpoints, data, config -----------------------------------------------------------------


def test_checkpoint_round_trip_and_refusals(tmp_path, images) -> None:
    collective = build(small())
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, collective, report={"accuracy": 0.5})
    loaded, report = load_checkpoint(path)
    assert report == {"accuracy": 0.5} and loaded.config == collective.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)[0], collective(images)[0])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(GfedgeError, match="not a readable safetensors"):
        load_checkpoint(bad)
    with pytest.raises(GfedgeError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_digits_split_is_fixed_and_stratified() -> None:
    a, b = digits_split(), digits_split()
    assert torch.equal(a.x_test, b.x_test) and len(a.x_test) == 450 and len(a.x_train) == 1347
    counts = np.bincount(a.y_test.numpy(), minlength=10)
    assert counts.min() >= 43 and counts.max() <= 46  # 25% of each class, rounded
    assert float(a.x_train.min()) == 0.0 and float(a.x_train.max()) == 16.0


def test_shift_images_moves_by_at_most_one_pixel() -> None:
    img = torch.zeros(200, 64)
    img[:, 3 * 8 + 4] = 1.0
    moved = shift_images(img, torch.Generator().manual_seed(0)).reshape(200, 8, 8)
    where = moved.flatten(1).argmax(dim=1)
    rows, cols = where // 8, where % 8
    assert bool(((rows - 3).abs() <= 1).all() and ((cols - 4).abs() <= 1).all())
    assert len(set(zip(rows.tolist(), cols.tolist()))) == 9 and torch.equal(moved.sum((1, 2)), torch.ones(200))


def test_config_round_trips_and_refuses_bad_values() -> None:
    config = CollectiveConfig.digits()
    assert CollectiveConfig.from_dict(config.to_dict()) == config
    with pytest.raises(GfedgeError, match="unknown collective config fields"):
        CollectiveConfig.from_dict({**config.to_dict(), "bogus": 1})
    with pytest.raises(GfedgeError, match="unique"):
        CollectiveConfig(streams=(StreamConfig("a"), StreamConfig("a")))
    with pytest.raises(GfedgeError, match="unknown view"):
        StreamConfig("a", view="colour")
    with pytest.raises(GfedgeError, match="divisible"):
        CollectiveConfig(streams=(StreamConfig("a"),), feature_dim=30, num_heads=4)
    assert CollectiveConfig.tiny().replace(num_routes=9).routes == 4  # K capped at the slot count
