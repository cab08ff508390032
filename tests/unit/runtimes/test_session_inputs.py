"""The runtime refuses bad inputs and bad keys with the fix, before they reach the graph."""

import numpy as np
import pytest

from geofractal_edge.artifacts import Key, write_key
from geofractal_edge.errors import InputError, KeyFileError
from geofractal_edge.runtimes import load


@pytest.fixture(scope="module")
def session(bundle_factory):
    return load(bundle_factory("fp32"))


def x(n=5):
    return np.linspace(0, 1, n, dtype=np.float32)


def test_runs_and_reports_providers(session):
    out = session.run({"x": x()}, key=session.bundle.key_names()[0])
    assert out["logits"].shape[0] == 5
    assert session.providers_used == ("CPUExecutionProvider",)


@pytest.mark.parametrize(
    "feeds,match",
    [
        ({"y": x()}, "unknown input"),
        ({}, "missing input"),
        ({"x": x().astype(np.float64)}, "dtype float64.*pass float32"),
        ({"x": x().reshape(1, 5)}, r"shape \[1, 5\].*pass shape \[n\]"),
        ({"x": np.array([0.1, np.nan], dtype=np.float32)}, "NaN"),
        ({"x": np.array([0.5, 1.5], dtype=np.float32)}, r"outside \[0.0, 1.0\]"),
        ({"x": np.array([-0.1], dtype=np.float32)}, r"outside \[0.0, 1.0\]"),
    ],
)
def test_bad_inputs_name_the_fix(session, feeds, match):
    with pytest.raises(InputError, match=match):
        session.run(feeds)


def test_raw_key_vector_is_not_an_input(session):
    with pytest.raises(InputError, match="--key"):
        session.run({"x": x(), "key": np.zeros(session.bundle.manifest.keys.dim, np.float32)})


def test_unknown_key_lists_known_ones(session):
    with pytest.raises(KeyFileError, match="unknown key 'nope'.*known keys"):
        session.use_key("nope")


def test_key_of_wrong_dimension_or_core_is_refused(session, tmp_path):
    dim = session.bundle.manifest.keys.dim
    core = session.bundle.manifest.model.core_sha256
    write_key(tmp_path / "short.safetensors", Key("short", np.zeros(dim - 1, np.float32), core, "atlas"))
    write_key(tmp_path / "alien.safetensors", Key("alien", np.zeros(dim, np.float32), "f" * 64, "atlas"))
    with pytest.raises(KeyFileError, match="dimension"):
        session.keys.from_file(tmp_path / "short.safetensors")
    with pytest.raises(KeyFileError, match="made for core"):
        session.keys.from_file(tmp_path / "alien.safetensors")


def test_hot_added_key_folder_is_found_and_switching_rebuilds_nothing(session, tmp_path):
    name = session.bundle.key_names()[0]
    core = session.bundle.manifest.model.core_sha256
    write_key(tmp_path / "copy.safetensors", Key("copy", session.bundle.key(name).vector, core, "atlas"))
    session.keys.add_folder(tmp_path)
    graph = session._session
    a = session.run({"x": x()}, key=name)["logits"]
    b = session.run({"x": x()}, key="copy")["logits"]
    assert session._session is graph  # the same onnxruntime session served both keys
    np.testing.assert_array_equal(a, b)
    other = session.bundle.key_names()[1]
    assert not np.array_equal(a, session.run({"x": x()}, key=other)["logits"])
