"""Inputs are held to the manifest's declared bounds from the file header, before any array is built."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save

from geofractal_edge.artifacts.manifest import DimRange, TensorDecl
from geofractal_edge.errors import InputError
from geofractal_edge.runtimes.io import read_inputs, tensors_from_json
from tests.conftest import ROOT, gfedge

X = TensorDecl(name="x", dtype="float32", shape=("n",), range=(0.0, 1.0))
TOKENS = TensorDecl(name="tokens", dtype="int64", shape=("batch", 4), range=(0.0, 50.0))
RANGES = {"n": DimRange(min=1, opt=64, max=1000), "batch": DimRange(min=1, opt=2, max=8)}


def _npz(path, compressed=True, **arrays):
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def test_arrays_within_bounds_are_read(tmp_path):
    feeds = read_inputs(_npz(tmp_path / "ok.npz", x=np.zeros(10, np.float32)), [X], RANGES)
    assert feeds["x"].shape == (10,)
    feeds = read_inputs(_npz(tmp_path / "ok.npz", compressed=False, tokens=np.zeros((2, 4), np.int64)), [TOKENS], RANGES)
    assert feeds["tokens"].shape == (2, 4)
    st = tmp_path / "ok.safetensors"
    st.write_bytes(save({"x": np.zeros(5, np.float32)}))
    assert read_inputs(st, [X], RANGES)["x"].shape == (5,)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".json"])
def test_a_dimension_over_its_bound_is_refused_naming_the_bound(tmp_path, suffix):
    array = np.zeros(1001, np.float32)
    path = tmp_path / f"big{suffix}"
    if suffix == ".npz":
        _npz(path, x=array)
    elif suffix == ".safetensors":
        path.write_bytes(save({"x": array}))
    else:
        path.write_text(json.dumps({"x": array.tolist()}))
    with pytest.raises(InputError, match=r"n=1001 on axis 0, outside the declared 1\.\.1000"):
        read_inputs(path, [X], RANGES)


def test_a_compressed_npz_is_refused_from_its_header_without_inflating(tmp_path):
    """A ~60 KB file that would inflate to 400 MB: refused, and the reading process stays small."""
    path = _npz(tmp_path / "bomb.npz", x=np.zeros(100_000_000, np.float32))
    assert path.stat().st_size < 1_000_000
    script = textwrap.dedent(f"""
        import resource, sys
        from geofractal_edge.artifacts.manifest import DimRange, TensorDecl
        from geofractal_edge.errors import InputError
        from geofractal_edge.runtimes.io import read_inputs
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            read_inputs({str(path)!r}, [TensorDecl(name="x", dtype="float32", shape=("n",))], {{"n": DimRange(min=1, opt=64, max=1000)}})
        except InputError as exc:
            print("refused:", exc.one_line())
        print("growth_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120).stdout
    assert "refused:" in out and "outside the declared 1..1000" in out, out
    assert int(out.split("growth_kb")[1]) < 50 * 1024, out


@pytest.mark.parametrize("make,match", [
    (lambda p: p.write_bytes(b"not a zip at all"), "cannot read"),
    (lambda p: _object_npz(p), "Python objects"),
    (lambda p: _npz(p, x=np.zeros(3, np.float64)), "dtype float64.*pass float32"),
    (lambda p: _npz(p, y=np.zeros(3, np.float32)), "unknown input"),
])
def test_hostile_npz_files_are_one_line_input_errors(tmp_path, make, match):
    path = tmp_path / "in.npz"
    make(path)
    with pytest.raises(InputError, match=match):
        read_inputs(path, [X], RANGES)


def _object_npz(path):
    """An .npz whose member is an object array (would need pickle to load)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.array([None, 1], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", buffer.getvalue())


@pytest.mark.parametrize("value,match", [
    ({"tokens": [[1, 2, 3, 1.7]]}, "1.7, not an integer"),
    ({"tokens": [[1, 2, 3, 2**70]]}, "outside int64"),
    ({"tokens": [[1, 2, 3, "0"]]}, "holds str"),
    ({"tokens": [[1, 2, 3, True]]}, "holds bool"),
    ({"tokens": [[1, 2, 3]]}, r"shape \[1, 3\]"),
    ({"tokens": [[1, 2, 3, 4], [1, 2]]}, "different lengths"),
    ({"tokens": [[0, 0, 0, 0]] * 9}, "batch=9 on axis 0, outside the declared 1..8"),
    ({"tokens": [[1, 2, 3, 4]], "extra": [1]}, "unknown input"),
    ([1, 2], "must be an object"),
])
def test_json_inputs_are_never_coerced(value, match):
    with pytest.raises(InputError, match=match):
        tensors_from_json(value, [TOKENS], RANGES)


def test_json_floats_for_a_float_input_and_ints_for_an_int_input_are_taken():
    assert tensors_from_json({"x": [0, 0.5, 1]}, [X], RANGES)["x"].dtype == np.float32
    tokens = tensors_from_json({"tokens": [[1, 2, 3, 4]]}, [TOKENS], RANGES)["tokens"]
    assert tokens.dtype == np.int64 and tokens.tolist() == [[1, 2, 3, 4]]
    with pytest.raises(InputError, match="NaN"):
        tensors_from_json({"x": [0.5, float("nan")]}, [X], RANGES)


def test_gfedge_run_refuses_100x_over_the_bound_with_exit_2(bundle_factory, tmp_path):
    """Atlas declares n <= 16384; 100x that is refused from the header in one line."""
    path = _npz(tmp_path / "big.npz", x=np.zeros(1_638_400, np.float32))
    result = gfedge("run", bundle_factory("fp32"), "--input", path)
    assert result.returncode == 2, result.stderr
    assert "outside the declared 1..16384" in result.stderr and len(result.stderr.strip().splitlines()) == 1
