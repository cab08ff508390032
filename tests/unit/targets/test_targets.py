import subprocess
import sys
import textwrap

import pytest

from geofractal_edge.errors import GfedgeError, UnknownTargetError
from geofractal_edge.targets import TargetProfile, all_targets, get_target
from geofractal_edge.targets.precisions import PRECISIONS
from tests.conftest import ROOT

REQUIRED = {"host-cpu", "a100", "rtx4090", "jetson-agx-orin", "jetson-orin-nano"}


def test_every_required_target_ships():
    assert REQUIRED <= set(all_targets())


@pytest.mark.parametrize("alias,name", [("jetson-orin", "jetson-agx-orin"), ("orin-nano", "jetson-orin-nano"), ("cpu", "host-cpu")])
def test_aliases_resolve(alias, name):
    assert get_target(alias).name == name


def test_unknown_target_lists_known_ones():
    with pytest.raises(UnknownTargetError) as err:
        get_target("jetson-nanoo")
    text = str(err.value)
    assert "jetson-nanoo" in text and all(name in text for name in REQUIRED)
    assert "did you mean jetson-orin-nano" in text


def test_profiles_carry_the_device_facts():
    nano, agx, a100, rtx = (get_target(n) for n in ("jetson-orin-nano", "jetson-agx-orin", "a100", "rtx4090"))
    assert (nano.sm, nano.memory_shared, nano.dla_cores, nano.tensorrt_version) == ("8.7", True, 0, "10.3")
    assert (agx.dla_cores, agx.tensorrt_major) == (2, 10)
    assert a100.tensorrt_major == 11 and rtx.sm == "8.9"
    assert nano.workspace_mib < agx.workspace_mib
    assert all(p.ort_providers[-1] == "CPUExecutionProvider" for p in all_targets().values())


def test_profiles_list_only_exported_precisions():
    for profile in all_targets().values():
        assert set(profile.precisions) <= set(PRECISIONS) and set(profile.dla_precisions) <= set(profile.precisions), profile.name


@pytest.mark.parametrize("field", ["precisions", "dla_precisions"])
def test_a_precision_no_scheme_exports_is_refused_with_the_list(field):
    data = get_target("jetson-agx-orin").to_dict() | {field: ["fp32", "fp16", "bf16"]}
    with pytest.raises(GfedgeError) as err:
        TargetProfile.from_dict(data)
    text = str(err.value)
    assert "bf16" in text and field in text and all(p in text for p in PRECISIONS) and "\n" not in text


def test_targets_import_without_torch_or_onnx():
    script = textwrap.dedent(
        """
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "onnx", "onnxruntime"):
                    raise ImportError(f"{name} is blocked")
        sys.meta_path.insert(0, Block())
        from geofractal_edge.targets import all_targets
        from geofractal_edge.targets.precisions import PRECISIONS
        print(len(all_targets()), PRECISIONS)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr


def test_budget_counts_the_shared_pool_minus_reserve():
    nano = get_target("jetson-orin-nano")
    expected = int((8 * 2**30 - nano.reserve_mib * 2**20) * nano.budget_fraction)
    assert nano.budget_bytes() == expected
    host = get_target("host-cpu")
    with pytest.raises(GfedgeError):
        host.budget_bytes()
    assert host.budget_bytes(host_total_bytes=16 * 2**30) < 16 * 2**30


def test_unknown_profile_field_is_refused():
    with pytest.raises(GfedgeError, match="unknown fields"):
        TargetProfile.from_dict(get_target("a100").to_dict() | {"tflops": 1})
