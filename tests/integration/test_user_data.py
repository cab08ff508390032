"""Issue 13 item 2: a TriX LM trained on the user's own text exports what it trained on.

CPython's LICENSE.txt is real text whose alphabet is a strict subset of the pydoc corpus's, so before
the checkpoint recorded its text, export built golden cases from pydoc and failed with "text has
characters outside the model's vocabulary".
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import gfedge

LICENSE = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"


@pytest.fixture(scope="module")
def license_model(tmp_path_factory) -> tuple[Path, str]:
    """(a TriX checkpoint trained by `gfedge train trix --text` on 6,000 characters of LICENSE.txt, that text)."""
    if not LICENSE.is_file():
        pytest.skip(f"{LICENSE} is not shipped with this Python")
    folder = tmp_path_factory.mktemp("user-text")
    text = LICENSE.read_text(encoding="utf-8")[:6000]
    (folder / "license.txt").write_text(text, encoding="utf-8")
    out = folder / "license.safetensors"
    result = gfedge("train", "trix", "--text", folder / "license.txt", "--out", out, "--steps", "12", "--context", "32", "--json")
    assert result.returncode == 0, result.stderr
    return out, text


def test_a_trix_lm_trained_on_user_text_exports_at_int8_and_verifies(license_model, tmp_path):
    from geofractal_edge.models.trix.data import text_sha256

    model, text = license_model
    bundle = tmp_path / "bundle"
    result = gfedge("export", "--family", "trix", "--model", model, "--precision", "int8", "--target", "host-cpu", "--out", bundle, "--json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["source"]["text_sha256"] == text_sha256(text)
    verify = gfedge("verify", bundle)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.strip().splitlines()[-1].startswith("PASSED")


def test_export_calibration_text_outside_the_vocabulary_is_one_line(license_model, tmp_path):
    model, _ = license_model
    odd = tmp_path / "odd.txt"
    odd.write_text("Ωμέγα " * 40, encoding="utf-8")
    result = gfedge("export", "--family", "trix", "--model", model, "--precision", "fp32", "--target", "host-cpu",
                    "--out", tmp_path / "b", "--calibration", odd)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "outside the model's vocabulary" in lines[0] and "odd.txt" in lines[0], result.stderr
    assert not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def arrays_file(tmp_path_factory) -> Path:
    """Two frozen-feature streams of different widths (512 and 768, like two encoders' embeddings), 4 classes."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 60)
    means = {name: rng.normal(size=(4, width)) for name, width in (("small", 512), ("large", 768))}
    streams = {f"stream_{name}": (m[labels] + 0.5 * rng.normal(size=(len(labels), m.shape[1]))).astype(np.float32) for name, m in means.items()}
    path = tmp_path_factory.mktemp("arrays") / "features.npz"
    np.savez(path, labels=labels, **streams)
    return path


def test_a_collective_trained_on_user_arrays_of_two_widths_exports_at_int8_and_verifies(arrays_file, tmp_path):
    model = tmp_path / "arrays.safetensors"
    trained = gfedge("train", "collective", "--data", arrays_file, "--out", model, "--epochs", "8", "--json")
    assert trained.returncode == 0, trained.stderr
    report = json.loads(trained.stdout)
    assert report["streams"] == {"small": 512, "large": 768} and report["accuracy"] >= 0.9, report
    bundle = tmp_path / "bundle"
    result = gfedge("export", "--family", "collective", "--model", model, "--precision", "int8", "--target", "host-cpu", "--out", bundle, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["task"]["streams"] == ["small", "large"]  # the features input: the arrays concatenated in this order
    assert [s["width"] for s in manifest["model"]["config"]["streams"]] == [512, 768]
    verify = gfedge("verify", bundle)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.strip().splitlines()[-1].startswith("PASSED")


def test_train_collective_data_refuses_a_malformed_file_in_one_line(tmp_path):
    import numpy as np

    path = tmp_path / "bad.npz"
    np.savez(path, stream_a=np.zeros((5, 3), np.float32), labels=np.zeros(4, np.int64))
    result = gfedge("train", "collective", "--data", path, "--out", tmp_path / "m.safetensors")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "stream_a" in lines[0], result.stderr


def test_export_calibration_is_refused_for_a_family_that_does_not_read_one(tmp_path):
    (tmp_path / "c.txt").write_text("some text", encoding="utf-8")
    result = gfedge("export", "--family", "collective", "--target", "host-cpu", "--out", tmp_path / "b", "--calibration", tmp_path / "c.txt")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "does not take a calibration file" in lines[0], result.stderr
    assert not (tmp_path / "b").exists()
