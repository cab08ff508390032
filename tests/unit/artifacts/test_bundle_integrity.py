"""Every byte of a bundle is covered by a hash; paths cannot leave the bundle."""

import hashlib
import json

import pytest

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.artifacts.manifest import MANIFEST, MANIFEST_HASH
from geofractal_edge.errors import BundleError


def _files(bundle):
    return sorted(p for p in bundle.rglob("*") if p.is_file())


def test_clean_bundle_opens(bundle_copy):
    bundle = open_bundle(bundle_copy)
    assert bundle.manifest.family == "atlas"
    assert set(bundle.manifest.files) == {p.relative_to(bundle_copy).as_posix() for p in _files(bundle_copy)} - {MANIFEST, MANIFEST_HASH}


def test_any_corrupted_byte_in_any_file_is_caught(bundle_copy):
    for path in _files(bundle_copy):
        original = path.read_bytes()
        for offset in sorted({0, len(original) // 2, len(original) - 1}):
            damaged = bytearray(original)
            damaged[offset] ^= 0x01
            path.write_bytes(bytes(damaged))
            with pytest.raises(BundleError, match="sha256|corrupted|JSON"):
                open_bundle(bundle_copy)
        path.write_bytes(original)
    open_bundle(bundle_copy)  # restored: opens again


def test_missing_file_is_named(bundle_copy):
    (bundle_copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match="'model.onnx' is missing"):
        open_bundle(bundle_copy)


def _rewrite_manifest(bundle, edit):
    data = json.loads((bundle / MANIFEST).read_text())
    edit(data)
    text = json.dumps(data, indent=2) + "\n"
    (bundle / MANIFEST).write_text(text)
    (bundle / MANIFEST_HASH).write_text(hashlib.sha256(text.encode()).hexdigest() + "\n")


@pytest.mark.parametrize("evil", ["../outside.onnx", "/etc/passwd", "keys/../../x"])
def test_manifest_naming_a_file_outside_the_bundle_is_refused(bundle_copy, evil):
    _rewrite_manifest(bundle_copy, lambda d: d["files"].update({evil: {"sha256": "0" * 64, "bytes": 1}}))
    with pytest.raises(BundleError, match="outside the bundle"):
        open_bundle(bundle_copy)


def test_unknown_format_version_is_refused_with_fix(bundle_copy):
    _rewrite_manifest(bundle_copy, lambda d: d.update(format_version=99))
    with pytest.raises(BundleError, match="format version 99.*re-export"):
        open_bundle(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        open_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match="no manifest.json"):
        open_bundle(tmp_path)
