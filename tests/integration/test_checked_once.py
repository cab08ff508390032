"""A served request's inputs are checked once, and no check is weaker for it.

The zoo checks a request against the chosen model (`Entry.feeds`, values and ranges included) and
hands the runner `Checked` feeds, which it does not check again; the HTTP handler checks the
tensors' declared shapes once, before any array exists, and builds the arrays without checking
those again. Counted here by wrapping the checkers, on the handler (`inference.infer`), the zoo's
Python API and a plain Session; and bad inputs are still refused with the same one-line errors.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from geofractal_edge.backends import inputs
from geofractal_edge.backends.inputs import InputChecker
from geofractal_edge.backends.onnxruntime import load
from geofractal_edge.errors import GfedgeError, InputError
from geofractal_edge.runtimes import io
from geofractal_edge.runtimes.zoo.serving import inference, tensors
from geofractal_edge.runtimes.zoo.serving.options import ServeOptions
from geofractal_edge.runtimes.zoo.serving.replies import status_of
from geofractal_edge.runtimes.zoo.zoo import Zoo

MODEL = "m"
X = np.linspace(0.0, 1.0, 12, dtype=np.float32)


@pytest.fixture(scope="module")
def zoo(bundle_factory, tmp_path_factory):
    root = tmp_path_factory.mktemp("checked-once")
    shutil.copytree(bundle_factory("fp32"), root / MODEL)
    zoo = Zoo(root, budget_bytes=64 << 20, warm=False)
    yield zoo
    zoo.close()


@pytest.fixture()
def counts(monkeypatch):
    """Calls of every check a request can meet: the prepared checker, the slow exact one, the shape checks."""
    seen = {"checker": 0, "check_inputs": 0, "serving shape": 0, "io shape": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            seen[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(InputChecker, "__call__", counted("checker", InputChecker.__call__))
    monkeypatch.setattr(inputs, "check_inputs", counted("check_inputs", inputs.check_inputs))
    monkeypatch.setattr(tensors, "check_shape", counted("serving shape", tensors.check_shape))
    monkeypatch.setattr(io, "check_shape", counted("io shape", io.check_shape))
    return seen


def _serve(zoo, x, *, shape=None, binary=False):
    """One request through the HTTP handler, as the server calls it: (status, reply or the one-line error)."""
    x = np.asarray(x, dtype=np.float32)
    tensor = {"name": "x", "shape": list(shape or x.shape), "datatype": "FP32"}
    if binary:
        tensor["parameters"] = {"binary_data_size": x.nbytes}
    else:
        tensor["data"] = x.reshape(-1).tolist()
    header = json.dumps({"inputs": [tensor]}).encode()
    body = header + (x.astype("<f4").tobytes() if binary else b"")
    try:
        reply = inference.infer(zoo, ServeOptions(), MODEL, [body], str(len(header)) if binary else None)
    except InputError as exc:
        return status_of(exc), exc.one_line()
    return reply.status, json.loads(reply.body[: int(reply.headers.get("inference-header-content-length", len(reply.body)))])


@pytest.mark.parametrize("binary", [False, True])
def test_each_served_request_is_checked_once(zoo, counts, binary):
    _serve(zoo, X, binary=binary)  # loads the model: its warm-up runs golden inputs through the session's own check
    counts.update(dict.fromkeys(counts, 0))
    for _ in range(3):
        status, reply = _serve(zoo, X, binary=binary)
        assert status == 200 and reply["outputs"][0]["shape"][0] == X.size
    assert counts == {"checker": 3, "check_inputs": 0, "serving shape": 3, "io shape": 0}


def test_the_zoo_and_a_session_check_each_call_once(zoo, bundle_factory, counts):
    zoo.infer({"x": X}, model=MODEL)
    counts.update(dict.fromkeys(counts, 0))
    zoo.infer({"x": X}, model=MODEL)
    zoo.infer({"x": X.tolist()}, model=MODEL)  # lists: their shape is read before they are built, then the one full check
    assert counts == {"checker": 2, "check_inputs": 0, "serving shape": 0, "io shape": 1}
    with load(bundle_factory("fp32")) as session:
        counts.update(dict.fromkeys(counts, 0))
        session.run({"x": X})
        assert counts["checker"] == 1


@pytest.mark.parametrize("binary", [False, True])
def test_the_http_path_still_refuses_bad_inputs_with_400_and_the_fix(zoo, binary):
    status, error = _serve(zoo, np.array([0.5, 1.5], dtype=np.float32), binary=binary)
    assert status == 400 and error == "input 'x' has values in [0.5, 1.5], outside [0.0, 1.0] (pass values within [0.0, 1.0])"
    status, error = _serve(zoo, np.array([0.5, np.nan], dtype=np.float32), binary=True)
    assert status == 400 and error == "input 'x' has 1 NaN or infinite values (pass finite numbers)"
    status, error = _serve(zoo, np.zeros((2, 3), dtype=np.float32), binary=binary)
    assert status == 400 and error == "input 'x' has shape [2, 3] (pass shape [n])"
    top = zoo.state.get(MODEL).manifest.graph.dim_ranges["n"].max
    status, error = _serve(zoo, np.zeros(top + 1, dtype=np.float32), binary=binary)
    assert status == 400 and error == f"input 'x' has n={top + 1} on axis 0, outside the declared 1..{top} (pass n within 1..{top} (split larger work into several calls))"


def test_the_zoo_path_still_refuses_bad_inputs(zoo):
    with pytest.raises(InputError, match=r"^input 'x' has values in \[0.5, 1.5\], outside \[0.0, 1.0\] \(pass values within"):
        zoo.infer({"x": np.array([0.5, 1.5], dtype=np.float32)}, model=MODEL)
    with pytest.raises(InputError, match=r"^input 'x' has values in \[-1, 0.5\], outside"):
        zoo.infer({"x": [-1.0, 0.5]}, model=MODEL)
    with pytest.raises(InputError, match=r"^input 'x' has shape \[2, 3\] \(pass shape \[n\]\)$"):
        zoo.infer({"x": np.zeros((2, 3), dtype=np.float32)}, model=MODEL)
    with pytest.raises(InputError, match=r"^input 'x' has dtype float64 \(pass float32\)$"):
        zoo.infer({"x": X.astype(np.float64)}, model=MODEL)


def test_a_runner_checks_feeds_another_graph_passed(bundle_factory):
    """The proof is the declarations': feeds a checker of other bounds passed are checked again, and refused."""
    with load(bundle_factory("fp32")) as session:
        graph = session.manifest.graph
        looser = [dataclasses.replace(d, range=(0.0, 2.0)) if d.name == "x" else d for d in graph.data_inputs]
        feeds = InputChecker(looser, graph.dim_ranges).checked({"x": np.array([0.5, 1.5], dtype=np.float32)})
        with pytest.raises(InputError, match=r"outside \[0.0, 1.0\]"):
            session.run(feeds)
        same = InputChecker(graph.data_inputs, graph.dim_ranges).checked({"x": X})
        assert np.array_equal(session.run(same)["logits"], session.run({"x": X})["logits"])


def test_the_zoo_builds_one_input_checker_per_model(bundle_factory, tmp_path, monkeypatch):
    """The checker a request is checked with before the load is the loaded session's own, across reloads too."""
    made = []
    init = InputChecker.__init__

    def counted(self, *args, **kwargs):
        made.append(self)
        init(self, *args, **kwargs)

    shutil.copytree(bundle_factory("fp32"), tmp_path / MODEL)
    zoo = Zoo(tmp_path, budget_bytes=64 << 20, warm=False)
    monkeypatch.setattr(InputChecker, "__init__", counted)
    try:
        zoo.infer({"x": X}, model=MODEL)
        zoo.infer({"x": X}, model=MODEL)
        zoo.unload(MODEL)
        zoo.infer({"x": X}, model=MODEL)
        entry = zoo.state.get(MODEL)
        assert entry.session._check_inputs is entry.checker
    finally:
        zoo.close()
    assert len(made) == 1


def test_a_session_refuses_a_checker_of_other_declarations(bundle_factory):
    path = bundle_factory("fp32")
    with load(path) as session:
        graph = session.manifest.graph
    looser = [dataclasses.replace(d, range=(0.0, 2.0)) if d.name == "x" else d for d in graph.data_inputs]
    with pytest.raises(GfedgeError, match=r"^the input checker passed to this runner checks another graph's inputs \(pass the checker"):
        load(path, checker=InputChecker(looser, graph.dim_ranges))
    shared = InputChecker(graph.data_inputs, graph.dim_ranges)
    with load(path, checker=shared) as session:
        assert session._check_inputs is shared and session.run(shared.checked({"x": X}))["logits"].shape[0] == X.size
