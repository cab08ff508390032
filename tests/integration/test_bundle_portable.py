"""A bundle names nothing of the machine that exported it: no source-tree or venv paths in model.onnx."""

from __future__ import annotations

import sys

import onnx

from geofractal_edge.export.trace import STACK_TRACE
from tests.conftest import ROOT


def test_model_onnx_holds_no_stack_traces_and_no_path_of_this_machine(bundle_factory, trix_bundle_factory):
    for bundle in (bundle_factory("fp32"), bundle_factory("int4"), trix_bundle_factory("int8")):
        data = (bundle / "model.onnx").read_bytes()
        for path in {str(ROOT), sys.prefix}:
            assert path.encode() not in data, f"{bundle.name}/model.onnx names {path}"
        model = onnx.load_from_string(data)
        assert not [p for n in model.graph.node for p in n.metadata_props if p.key == STACK_TRACE]
        assert any(n.metadata_props for n in model.graph.node)  # the module scopes stay for debugging
