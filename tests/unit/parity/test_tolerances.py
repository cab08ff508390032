"""The tolerance table covers exactly the precisions geofractal_edge exports."""

import pytest

from geofractal_edge.errors import GfedgeError
from geofractal_edge.parity.tolerances import shipped, tolerances_for
from geofractal_edge.targets.precisions import PRECISIONS


def test_tolerances_toml_has_one_table_per_precision_and_no_other():
    assert sorted(shipped()) == sorted(PRECISIONS)
    keys = {frozenset(table) for table in shipped().values()}
    assert len(keys) == 1, "every precision sets the same checks"


def test_a_precision_nothing_exports_has_no_tolerances():
    with pytest.raises(GfedgeError) as err:
        tolerances_for("bf16")
    assert all(p in str(err.value) for p in PRECISIONS)
