import numpy as np
import pytest

from geofractal_edge.artifacts.ternary import pack_ternary, unpack_ternary
from geofractal_edge.errors import BundleError


@pytest.mark.parametrize("shape", [(1,), (3,), (4,), (5, 7), (2, 3, 9)])
def test_round_trip_is_exact_and_four_per_byte(shape):
    values = np.random.default_rng(0).integers(-1, 2, size=shape).astype(np.int8)
    packed = pack_ternary(values)
    assert packed.dtype == np.uint8 and packed.size == (values.size + 3) // 4
    np.testing.assert_array_equal(unpack_ternary(packed, shape), values)


def test_non_ternary_values_are_refused():
    with pytest.raises(ValueError):
        pack_ternary(np.array([2], dtype=np.int8))


def test_tampered_pack_is_detected():
    packed = pack_ternary(np.zeros(8, np.int8))
    packed[0] = 0b11
    with pytest.raises(BundleError, match="invalid 2-bit code"):
        unpack_ternary(packed, (8,))
    with pytest.raises(BundleError, match="needs"):
        unpack_ternary(packed[:1], (8,))
