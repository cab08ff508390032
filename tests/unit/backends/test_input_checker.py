"""The prepared per-call checker (InputChecker) agrees with check_inputs on every input: same verdict, same message."""

from __future__ import annotations

import numpy as np
import pytest

from geofractal_edge.artifacts.manifest import DimRange, TensorDecl
from geofractal_edge.backends import inputs
from geofractal_edge.backends.inputs import InputChecker, check_inputs
from geofractal_edge.errors import InputError

X = TensorDecl(name="x", dtype="float32", shape=("n",), range=(0.0, 1.0))
FREE = TensorDecl(name="free", dtype="float32", shape=("n", 3))  # floats without a range: finiteness only
TOKENS = TensorDecl(name="tokens", dtype="int64", shape=("batch", 4), range=(0.0, 50.0))
HALF = TensorDecl(name="h", dtype="float16", shape=(2,), range=(-1.0, 1.0))
SIGNED = TensorDecl(name="s", dtype="float32", shape=("n", 2), range=(-2.0, 2.0))  # a range not from 0: the min/max path
TOP = TensorDecl(name="t", dtype="float32", shape=("n",), range=(0.0, 0.7))  # 0.7 is not a float32: rounded as numpy compares
RANGES = {"n": DimRange(min=1, opt=4, max=256), "batch": DimRange(min=1, opt=2, max=8)}
SPECS = (X, FREE)


def _verdict(fn, feeds, specs):
    try:
        fn(feeds)
    except InputError as exc:
        return str(exc)
    return None


def _cases():
    f32 = np.float32
    for n in (1, 2, 43, 128, 129, 200):  # both sides of the small-list path (inputs._SMALL = 128)
        x = np.linspace(0, 1, n, dtype=f32)
        free = np.ones((n, 3), f32)
        yield {"x": x, "free": free}
        for bad in (np.nan, np.inf, -np.inf, 1.5, -0.5, 1.0000001):
            for where in {0, n - 1}:
                y = x.copy()
                y[where] = bad
                yield {"x": y, "free": free}
                g = free.copy()
                g.reshape(-1)[where] = bad
                yield {"x": x, "free": g}
        both = free.copy()
        both.reshape(-1)[:2] = (np.inf, -np.inf)
        yield {"x": x, "free": both}
        yield {"x": x, "free": np.full((n, 3), 3e38, f32)}  # finite values whose float32 sum would overflow
    x = np.linspace(0, 1, 4, dtype=f32)
    free = np.zeros((4, 3), f32)
    yield {"x": x}
    yield {"x": x, "free": free, "y": x}
    yield {"x": x, "y": free}
    yield {"x": x.astype(np.float64), "free": free}
    yield {"x": x.tolist(), "free": free}
    yield {"x": x.astype(">f4"), "free": free}  # equal values, another byte order: refused by dtype as before
    yield {"x": x, "free": np.zeros((5, 3), f32)}  # n disagrees
    yield {"x": x, "free": np.zeros((4, 2), f32)}
    yield {"x": x.reshape(2, 2), "free": free}
    yield {"x": np.zeros(257, f32), "free": np.zeros((257, 3), f32)}  # over the declared 256
    yield {"x": np.zeros(0, f32), "free": np.zeros((0, 3), f32)}  # under the declared 1
    yield {"x": x[::2], "free": free[:2]}  # strided view
    yield {"x": x, "free": np.asfortranarray(np.ones((4, 3), f32))}


@pytest.mark.parametrize("feeds", list(_cases()), ids=lambda f: "-".join(sorted(f))[:20])
def test_prepared_checker_agrees_with_check_inputs(feeds):
    checker = InputChecker(SPECS, RANGES)
    assert _verdict(checker, feeds, SPECS) == _verdict(lambda f: check_inputs(f, SPECS, RANGES), feeds, SPECS)


@pytest.mark.parametrize(
    "spec,array",
    [
        (TOKENS, np.array([[0, 1, 2, 50]] * 2, np.int64)),
        (TOKENS, np.array([[0, 1, 2, 51]], np.int64)),
        (TOKENS, np.array([[-1, 1, 2, 3]] * 9, np.int64)),
        (TOKENS, np.full((8, 4), 50, np.int64)),
        (TOKENS, np.full((8, 4), 51, np.int64)),
        (HALF, np.array([0.5, -1.0], np.float16)),
        (HALF, np.array([np.nan, 0.0], np.float16)),
        (HALF, np.array([1.0, 2.0], np.float16)),
        (X, np.array([-0.0, 0.5], np.float32)),  # -0.0 read as unsigned is a false alarm: check_inputs accepts it
        (X, np.full(200, -0.0, np.float32)),
        (X, np.array([0.5, -np.nan], np.float32)),
        (X, np.full(200, 1.0, np.float32)),
        (TOP, np.full(3, np.float32(0.7), np.float32)),  # equal to the bound in float32
        (TOP, np.full(200, np.float32(0.7), np.float32)),
        (TOP, np.full(3, np.nextafter(np.float32(0.7), np.float32(1)), np.float32)),
        (TOP, np.full(200, np.nextafter(np.float32(0.7), np.float32(1)), np.float32)),
        (SIGNED, np.full((3, 2), -2.0, np.float32)),
        (SIGNED, np.full((100, 2), 2.0, np.float32)),
        (SIGNED, np.full((100, 2), -2.5, np.float32)),
        (SIGNED, np.full((100, 2), np.inf, np.float32)),
        (TOKENS, np.array([[0, 1, 2, -3]] * 8, np.int64)),
        (TOKENS, np.full((1, 4), np.iinfo(np.int64).min, np.int64)),
    ],
)
def test_integer_and_half_inputs_agree(spec, array):
    feeds = {spec.name: array}
    assert _verdict(InputChecker([spec], RANGES), feeds, [spec]) == _verdict(lambda f: check_inputs(f, [spec], RANGES), feeds, [spec])


def test_good_inputs_never_take_the_slow_path(monkeypatch):
    """The point of the prepared checker: good inputs are proven good without check_inputs."""
    checker = InputChecker((X, FREE, TOKENS), RANGES)
    monkeypatch.setattr(inputs, "check_inputs", lambda *a: pytest.fail("good inputs went to the slow path"))
    for n in (1, 5, 40, 200):
        checker({"x": np.linspace(0, 1, n, dtype=np.float32), "free": np.ones((n, 3), np.float32),
                 "tokens": np.full((2, 4), 7, np.int64)})


def test_checked_feeds_are_proof_only_for_the_same_declarations():
    checker = InputChecker(SPECS, RANGES)
    good = {"x": np.full(3, 0.5, np.float32), "free": np.zeros((3, 3), np.float32)}
    feeds = checker.checked(good)
    assert dict(feeds) == good and feeds is not good
    assert checker.proved(feeds) and InputChecker(SPECS, dict(RANGES)).proved(feeds)  # another checker, the same declarations
    assert not checker.proved(good)  # a plain mapping proves nothing
    wider = InputChecker((TensorDecl(name="x", dtype="float32", shape=("n",), range=(0.0, 2.0)), FREE), RANGES)
    assert not InputChecker(SPECS, {**RANGES, "n": DimRange(min=1, opt=2, max=2)}).proved(feeds) and not wider.proved(feeds)
    assert not checker.proved(wider.checked({**good, "x": np.full(3, 1.5, np.float32)}))
    with pytest.raises(TypeError):
        feeds["x"] = np.zeros(3, np.float32)  # read-only: what was proved is what runs


def test_checked_refuses_what_the_checker_refuses():
    checker = InputChecker(SPECS, RANGES)
    bad = {"x": np.full(3, 1.5, np.float32), "free": np.zeros((3, 3), np.float32)}
    with pytest.raises(InputError) as caught:
        checker.checked(bad)
    assert str(caught.value) == _verdict(lambda f: check_inputs(f, SPECS, RANGES), bad, SPECS)


def test_a_checked_built_by_hand_or_relabelled_proves_nothing():
    from collections.abc import Mapping as AbstractMapping

    from geofractal_edge.backends.inputs import Checked

    checker = InputChecker(SPECS, RANGES)
    bad = {"x": np.full(3, 1e9, np.float32), "free": np.zeros((3, 3), np.float32)}
    assert not checker.proved(Checked(bad, checker))  # not issued by checked()
    wider = InputChecker((TensorDecl(name="x", dtype="float32", shape=("n",), range=(0.0, 2e9)), FREE), RANGES)
    loose = wider.checked(bad)
    with pytest.raises(AttributeError):
        loose.checker = checker  # the checker it was proved by cannot be swapped
    assert not checker.proved(loose)

    class Shifting(AbstractMapping):
        """A mapping whose values change between reads: the copy is what is checked, and what runs."""

        def __init__(self):
            self.reads = 0

        def __getitem__(self, name):
            self.reads += 1
            x = np.full(3, 0.5 if self.reads <= 2 else 5.0, np.float32)
            return x if name == "x" else np.zeros((3, 3), np.float32)

        def __iter__(self):
            return iter(("x", "free"))

        def __len__(self):
            return 2

    proof = checker.checked(Shifting())
    assert float(proof["x"][0]) == 0.5 and checker.proved(proof)
