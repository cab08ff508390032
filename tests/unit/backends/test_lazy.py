"""The one lazy importer: a missing or too old dependency is one line with the versions and the install hint."""

from __future__ import annotations

import dataclasses
import importlib.util
from importlib import metadata

import pytest

from geofractal_edge.backends import lazy
from geofractal_edge.errors import MissingDependencyError


def test_version_tuple_reads_the_leading_release_numbers():
    assert lazy.version_tuple("10.3.0.30") == (10, 3, 0, 30)
    assert lazy.version_tuple("2.13.0+cpu") == (2, 13, 0)
    assert lazy.version_tuple("1.18.0.dev20240501") == (1, 18, 0)
    assert lazy.version_tuple("1.9") < lazy.version_tuple("1.18")


def test_every_dependency_has_a_floor_and_one_hint():
    assert {"onnxruntime", "tensorrt", "cuda", "torch", "onnx", "onnxscript", "matplotlib"} <= set(lazy.DEPENDENCIES)
    assert lazy.DEPENDENCIES["onnxruntime"].floor == "1.18" and "geofractal-edge[runtime]" in lazy.DEPENDENCIES["onnxruntime"].hint
    assert lazy.DEPENDENCIES["tensorrt"].floor == "10.3" and "JetPack" in lazy.DEPENDENCIES["tensorrt"].hint
    assert "geofractal-edge[export]" in lazy.DEPENDENCIES["torch"].hint


def test_installed_dependency_is_returned():
    onnx = lazy.require("onnx")
    assert onnx.__version__ == metadata.version("onnx")


def test_too_old_dependency_names_found_and_required_versions(monkeypatch):
    found = metadata.version("onnx")
    monkeypatch.setitem(lazy.DEPENDENCIES, "onnx", dataclasses.replace(lazy.DEPENDENCIES["onnx"], floor="999.1"))
    with pytest.raises(MissingDependencyError) as err:
        lazy.require("onnx.helper")
    line = err.value.one_line()
    assert line == f'onnx {found} is too old: geofractal_edge needs onnx >= 999.1 (pip install "geofractal-edge[export]")'
    assert lazy.optional("onnx") is None


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here; this checks the message where it is not")
def test_missing_tensorrt_is_one_line_naming_jetpack():
    with pytest.raises(MissingDependencyError) as err:
        lazy.require("tensorrt")
    assert err.value.problem.startswith("TensorRT is not installed here") and "JetPack" in err.value.fix
    assert "\n" not in err.value.one_line()
