import numpy as np
import pytest

from geofractal_edge.artifacts import Key, check_key, read_key, write_key
from geofractal_edge.artifacts import atomic
from geofractal_edge.errors import GfedgeError, KeyFileError


def test_failed_directory_write_leaves_nothing(tmp_path):
    final = tmp_path / "bundle"
    with pytest.raises(RuntimeError):
        with atomic.directory(final) as staging:
            (staging / "model.onnx").write_bytes(b"half")
            raise RuntimeError("export died")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "b").mkdir()
    with pytest.raises(GfedgeError, match="--overwrite"):
        with atomic.directory(tmp_path / "b"):
            pass


def test_key_round_trip_and_checks(tmp_path):
    key = Key(name="k", vector=np.arange(4, dtype=np.float32), core_sha256="a" * 64, family="atlas")
    write_key(tmp_path / "k.safetensors", key)
    back = read_key(tmp_path / "k.safetensors")
    assert back.name == "k" and back.dim == 4 and np.array_equal(back.vector, key.vector)
    check_key(back, dim=4, core_sha256="a" * 64)
    with pytest.raises(KeyFileError, match="dimension 4"):
        check_key(back, dim=8, core_sha256="a" * 64)
    with pytest.raises(KeyFileError, match="made for core"):
        check_key(back, dim=4, core_sha256="b" * 64)


def test_garbage_key_file_is_refused(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"not a key")
    with pytest.raises(KeyFileError):
        read_key(tmp_path / "bad.safetensors")
    with pytest.raises(KeyFileError, match="does not exist"):
        read_key(tmp_path / "missing.safetensors")
