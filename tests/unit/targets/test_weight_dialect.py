"""Each target names the weight dialect its runtime executes: data, never a branch on the target's name."""

import pytest

from geofractal_edge.errors import GfedgeError
from geofractal_edge.targets import TargetProfile, all_targets, get_target
from geofractal_edge.targets.profile import WEIGHT_DIALECTS


def test_onnxruntime_targets_take_ort_and_tensorrt_targets_take_qdq():
    for profile in all_targets().values():
        assert profile.weight_dialect in WEIGHT_DIALECTS
        assert profile.weight_dialect == ("qdq" if profile.tensorrt_version else "ort"), profile.name
    assert get_target("host-cpu").weight_dialect == "ort"


def test_an_unknown_dialect_is_refused_with_the_list():
    data = get_target("host-cpu").to_dict() | {"weight_dialect": "gguf"}
    with pytest.raises(GfedgeError) as err:
        TargetProfile.from_dict(data)
    assert "gguf" in str(err.value) and all(d in str(err.value) for d in WEIGHT_DIALECTS)
