"""The fused host routing kernel (models/trix/fused.py): the same routes as eager torch, ties included."""

from __future__ import annotations

import pytest
import torch

from geofractal_edge.errors import InputError, MissingDependencyError
from geofractal_edge.models.trix import fused
from geofractal_edge.models.trix.ffn import TrixFFN, flat_route, hierarchical_route

needs_compiler = pytest.mark.skipif(fused.compiler() is None, reason="no C compiler (cc/gcc/$CC) on this machine to build the fused routing kernel")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("gfedge-cache")


def integer_tokens(n: int, d: int, seed: int) -> torch.Tensor:
    """Small integers: every score against ternary signatures is an exact integer, in any summation order."""
    return torch.randint(-2, 3, (n, d), generator=torch.Generator().manual_seed(seed)).float()


@needs_compiler
@pytest.mark.parametrize(("n_tiles", "d", "tokens"), [(6, 16, 1), (64, 32, 257), (300, 24, 64)])
def test_fused_routes_equal_eager_routes_exactly_with_many_ties(cache, n_tiles: int, d: int, tokens: int) -> None:
    torch.manual_seed(n_tiles)
    x = integer_tokens(tokens, d, seed=tokens)
    for routing in ("flat", "hierarchical"):
        ffn = TrixFFN(d, 8, n_tiles, routing=routing).eval()
        router = fused.FusedRouter.from_ffn(ffn, cache=cache)
        if routing == "flat":
            expected = flat_route(x, ffn.signatures())[0]
            scores = x @ ffn.signatures().T
        else:
            tables = ffn.hierarchy_tables()
            expected = hierarchical_route(x, *tables)[0]
            scores = x @ tables[0].T
            assert bool((tables[3] == float("-inf")).any()) or tables[2].shape[1] == 1  # padded member slots exist
        top2 = scores.topk(2, dim=1).values if scores.shape[1] > 1 else None
        if tokens > 1 and top2 is not None:
            assert bool((top2[:, 0] == top2[:, 1]).any()), "the inputs should contain exact ties"
        assert torch.equal(router(x), expected), routing
        assert torch.equal(router(x), ffn.route(x)), routing


@needs_compiler
def test_argmax_rows_picks_the_first_maximum_at_every_width(cache) -> None:
    lib = fused.kernel(cache)
    for width in (1, 2, 31, 32, 33, 1024, 1037):
        scores = torch.randint(0, 4, (50, width), generator=torch.Generator().manual_seed(width)).float()
        assert torch.equal(fused.argmax_rows(lib, scores), scores.argmax(dim=1)), width
    assert torch.equal(fused.argmax_rows(lib, torch.full((3, 40), float("-inf"))), torch.zeros(3, dtype=torch.int64))


@needs_compiler
def test_fused_routes_of_random_float_tokens_match_on_a_trained_size_model(cache) -> None:
    torch.manual_seed(0)
    ffn = TrixFFN(128, 8, 1024, routing="hierarchical").eval()
    x = torch.randn(512, 128, generator=torch.Generator().manual_seed(1))
    route, margin = ffn.routes(x)
    same = fused.FusedRouter.from_ffn(ffn, cache=cache)(x) == route
    # Another summation order can only flip a near-tie.
    assert bool(same.all()) or float(margin[~same].max()) < 1e-4


@needs_compiler
def test_bad_tokens_are_refused_in_one_line(cache) -> None:
    router = fused.FusedRouter.from_ffn(TrixFFN(16, 8, 6).eval(), cache=cache)
    with pytest.raises(InputError, match=r"expects tokens \[N, 16\].*flatten"):
        router(torch.zeros(2, 3, 16))
    assert router(torch.zeros(0, 16)).shape == (0,)


def test_no_compiler_or_a_failing_one_is_a_one_line_error_naming_the_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(MissingDependencyError, match=r"could not run .*no-such-cc.*\(set CC"):
        fused.build(tmp_path)
    monkeypatch.setenv("CC", "false")  # runs, exits 1, prints nothing: both flag sets are tried
    with pytest.raises(MissingDependencyError, match=r"false could not compile route_kernel.c: exit 1 \(set CC"):
        fused.build(tmp_path)
    monkeypatch.delenv("CC")
    monkeypatch.setattr(fused.shutil, "which", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"no C compiler .*install gcc"):
        fused.build(tmp_path)


@needs_compiler
def test_tables_that_disagree_and_wide_clusters_are_refused_before_the_kernel_sees_them(cache) -> None:
    ffn = TrixFFN(16, 8, 12, routing="hierarchical", n_clusters=3).eval()
    cluster_sigs, member_sigs, members, pad = ffn.hierarchy_tables()
    with pytest.raises(InputError, match=r"members must be \[3, \d+\] to match"):
        fused.FusedRouter.hierarchical(cluster_sigs, member_sigs, members[:1], pad, cache=cache)
    with pytest.raises(InputError, match=r"cluster signatures must be"):
        fused.FusedRouter.hierarchical(torch.zeros(64, 16), member_sigs, members, pad, cache=cache)
    wide = torch.zeros(1, 257, 16)
    with pytest.raises(InputError, match=r"exceed the fused kernel's 256 slots"):
        fused.FusedRouter.hierarchical(torch.zeros(1, 16), wide, torch.zeros(1, 257, dtype=torch.long), torch.zeros(1, 257), cache=cache)
    with pytest.raises(InputError, match=r"argmax_rows takes \[N, n >= 1\]"):
        fused.argmax_rows(fused.kernel(cache), torch.empty(3, 0))


@needs_compiler
def test_a_capacity_that_fills_whole_lanes_and_a_cached_kernel(cache) -> None:
    torch.manual_seed(7)
    ffn = TrixFFN(32, 8, 64, routing="hierarchical", n_clusters=4, cluster_capacity_factor=1.0).eval()
    assert ffn.capacity == 16  # no padded lanes: the kernel's slot count equals the capacity
    x = integer_tokens(99, 32, seed=7)
    first = fused.build(cache)
    assert fused.build(cache) == first and first.exists()  # the second call loads the cached library
    assert torch.equal(fused.FusedRouter.from_ffn(ffn, cache=cache)(x), ffn.route(x))


@needs_compiler
def test_router_tables_are_copies(cache) -> None:
    ffn = TrixFFN(16, 8, 1).eval()  # one tile: .T.contiguous() alone would share the signatures' storage
    sigs = ffn.signatures()
    router = fused.FusedRouter.flat(sigs, cache=cache)
    assert router.signatures_t.data_ptr() != sigs.data_ptr()
