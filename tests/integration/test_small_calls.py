"""Small calls on fewer threads: a second session of the same graph for calls at or below `small_call_batch`
(runtime setting `small_call_threads`), and export's choice of it (`--small-calls measure|on|off`)."""

from __future__ import annotations

import numpy as np
import pytest

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.backends.onnxruntime.loader import small_calls
from geofractal_edge.errors import GfedgeError
from geofractal_edge.export import small_calls as export_small_calls
from geofractal_edge.pipeline import export_bundle
from geofractal_edge.runtimes import load
from geofractal_edge.targets.profile import RuntimeSettings


def _x(n: int) -> dict[str, np.ndarray]:
    return {"x": np.linspace(0.0, 1.0, n, dtype=np.float32)}


class _Counted:
    """Stands in for an InferenceSession's C session (`_sess`, which the runner's direct run looks up per call) and
    counts the runs that reach it, so the test sees which onnxruntime session a call really ran on."""

    def __init__(self, inner, label: str, counts: dict) -> None:
        self._inner, self._label, self._counts = inner, label, counts

    def run(self, *args, **kwargs):
        self._counts[self._label] = self._counts.get(self._label, 0) + 1
        return self._inner.run(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_calls_at_or_below_the_small_batch_run_on_the_fewer_threads_session(bundle_factory):
    with load(bundle_factory("fp32"), intra_op_threads=2, small_call_threads=1, small_call_batch=2) as session, \
            load(bundle_factory("fp32"), intra_op_threads=2) as plain:
        assert session.session_for(_x(2)).get_session_options().intra_op_num_threads == 1
        assert session.session_for(_x(3)).get_session_options().intra_op_num_threads == 2
        counts: dict = {}
        session._small_session._sess = _Counted(session._small_session._sess, "1 thread", counts)
        session._session._sess = _Counted(session._session._sess, "2 threads", counts)
        for n in (1, 2, 3, 7):
            got, want = session.run(_x(n))["logits"], plain.run(_x(n))["logits"]
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        assert counts == {"1 thread": 2, "2 threads": 2}
        bare = session.bare_runner()  # gfedge bench's baseline runs the same session as the call it is set beside
        for n, ran in ((1, "1 thread"), (5, "2 threads")):
            before = dict(counts)
            np.testing.assert_allclose(bare({**_x(n), "key": session.bound_key.vector})[0], plain.run(_x(n))["logits"], rtol=1e-6, atol=1e-7)
            assert counts[ran] == before[ran] + 1 and sum(counts.values()) == sum(before.values()) + 1


def test_no_second_session_where_it_would_change_nothing(bundle_factory):
    graph = open_bundle(bundle_factory("fp32")).manifest.graph
    assert small_calls(graph, RuntimeSettings(small_call_threads=0)) is None
    assert small_calls(graph, RuntimeSettings(intra_op_threads=1, small_call_threads=1)) is None  # the same threads
    assert small_calls(graph, RuntimeSettings(intra_op_threads=2, small_call_threads=3)) is None  # more threads
    assert small_calls(graph, RuntimeSettings(intra_op_threads=2, small_call_threads=1, small_call_batch=0)) is None
    assert small_calls(graph, RuntimeSettings(intra_op_threads=2, small_call_threads=1)) == ("x", 1)
    assert small_calls(graph, RuntimeSettings(intra_op_threads=2, small_call_threads=1), ("CUDAExecutionProvider", "CPUExecutionProvider")) is None
    with load(bundle_factory("fp32"), intra_op_threads=1, small_call_threads=1) as session:
        assert session._small_session is None
    with pytest.raises(GfedgeError, match="small_call_threads is -1"):
        RuntimeSettings(small_call_threads=-1)


@pytest.mark.parametrize("mode", ["on", "off"])
def test_export_records_the_choice_asked_for(tiny_checkpoint, tmp_path, mode):
    result = export_bundle(family="atlas", target="host-cpu", precision="fp32", model=tiny_checkpoint, out=tmp_path / "b", small_calls=mode)
    manifest = result.manifest
    assert manifest.target.runtime.small_call_threads == (1 if mode == "on" else 0)
    assert manifest.small_calls.kept is (mode == "on") and manifest.small_calls.session_us is None
    assert "not measured" in manifest.small_calls.why
    assert result.parity.passed
    with load(result.path, intra_op_threads=2) as session:
        assert (session._small_session is not None) is (mode == "on")


def test_a_mode_that_is_none_of_them_is_refused_before_any_work(tiny_checkpoint, tmp_path):
    with pytest.raises(GfedgeError, match="--small-calls 'sometimes' is not a mode"):
        export_bundle(family="atlas", target="host-cpu", precision="fp32", model=tiny_checkpoint, out=tmp_path / "b", small_calls="sometimes")
    assert not (tmp_path / "b").exists()


def test_measure_keeps_it_only_where_the_small_calls_ran_faster(bundle_factory, monkeypatch):
    bundle = open_bundle(bundle_factory("fp32"))  # exported with small_calls off: measured as host-cpu asks, on 2 threads
    asked = bundle.manifest.target.runtime.but(small_call_threads=1, intra_op_threads=2)
    measured = export_small_calls.measure(bundle, settings=asked, rounds=3)
    assert measured.threads == 1 and measured.batch == 1
    assert measured.session_us > 0 and measured.small_us > 0
    line = f"x{1 - export_small_calls.MIN_GAIN:.2f})"
    assert measured.kept is (f"(at most {line}" in measured.why) and (f"(above {line}" in measured.why) is not measured.kept
    monkeypatch.setattr(export_small_calls, "MAX_WEIGHT_BYTES", 0)
    capped = export_small_calls.measure(bundle, settings=asked, rounds=3)
    assert not capped.kept and capped.session_us is None and "a second session's copy" in capped.why


def test_on_keeps_the_weight_cap(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(export_small_calls, "MAX_WEIGHT_BYTES", 0)
    result = export_bundle(family="atlas", target="host-cpu", precision="fp32", model=tiny_checkpoint, out=tmp_path / "b", small_calls="on")
    assert result.manifest.target.runtime.small_call_threads == 0 and not result.manifest.small_calls.kept
    assert "a second session's copy" in result.manifest.small_calls.why
