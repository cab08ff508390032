"""Bundles sized for a device: fewer golden cases at export or afterwards, still verifiable."""

from __future__ import annotations

import json

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.artifacts.strip import strip_golden
from geofractal_edge.parity import verify_bundle
from tests.conftest import gfedge


def test_strip_golden_keeps_the_first_cases_and_verify_still_passes(bundle_factory, tmp_path):
    src = bundle_factory("fp32")
    full = open_bundle(src)
    assert full.manifest.golden.cases >= 2
    small = strip_golden(src, keep=1, out=tmp_path / "small")
    assert small.manifest.golden.files == full.manifest.golden.files[:1]
    assert small.total_bytes < full.total_bytes
    assert not any(p.name == "case_001.safetensors" for p in (tmp_path / "small").rglob("*"))
    report = verify_bundle(small)
    assert report.passed and len(report.cases) == 1
    assert small.manifest.parity == full.manifest.parity  # what export measured on every case is kept


def test_cli_strip_golden_in_place_and_refuses_zero(bundle_factory, tmp_path):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(bundle_factory("fp32"), bundle)
    result = gfedge("strip-golden", bundle, "--keep", "1", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["cases"] == 1 and summary["bytes_after"] < summary["bytes_before"]
    assert gfedge("verify", bundle).returncode == 0
    bad = gfedge("strip-golden", bundle, "--keep", "0")
    assert bad.returncode == 2 and "at least 1" in bad.stderr


def test_export_golden_n_writes_n_cases(tiny_checkpoint, tmp_path):
    from geofractal_edge.pipeline import export_bundle

    result = export_bundle(family="atlas", target="host-cpu", precision="fp32", model=tiny_checkpoint, out=tmp_path / "g1", golden=1)
    assert result.manifest.golden.cases == 1 and result.parity.passed
