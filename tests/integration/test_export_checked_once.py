"""onnx's full check (strict shape inference included) runs once per export, for every family, on the graph the bundle
holds: the pipeline owns it, after quantize and (ternary specs) lower_ternary, neither of which runs it."""

from __future__ import annotations

import onnx
import pytest

from geofractal_edge.errors import Bug
from geofractal_edge.pipeline import export_bundle

# family -> (checkpoint fixture, precision): the precision that runs the most steps each family takes on host-cpu
EXPORTS = {"atlas": ("tiny_checkpoint", "int8"), "trix": ("trix_checkpoint", "int4"), "collective": ("collective_checkpoint", "int8"),
           "collective-encoder": ("minilm_port", "fp32")}


def _counted(monkeypatch) -> list[tuple[dict, list[str]]]:
    """Every onnx.checker.check_model call: its keywords and the op types of the graph it checked."""
    calls = []
    real = onnx.checker.check_model

    def check(model, **kw):
        calls.append((kw, [n.op_type for n in model.graph.node]))
        return real(model, **kw)

    monkeypatch.setattr(onnx.checker, "check_model", check)
    return calls


# The encoder's export (a 90 MB BERT traced again) runs with the slow tests; the other three keep the invariant in `make test`.
@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f == "collective-encoder" else f for f in EXPORTS])
def test_every_family_s_export_runs_the_full_check_once_on_the_bundle_s_graph(request, monkeypatch, tmp_path, family):
    fixture, precision = EXPORTS[family]
    source = request.getfixturevalue(fixture)
    if family == "collective-encoder":
        from geofractal_edge.models.collective.encoder import encoder_exportable

        kwargs = {"exportable": encoder_exportable(source, cases=1, per_case=2)}
    else:
        kwargs = {"model": source[0] if isinstance(source, tuple) else source}
    calls = _counted(monkeypatch)
    result = export_bundle(family=family, target="host-cpu", precision=precision, out=tmp_path / "b", small_calls="off", **kwargs)
    saved = onnx.load(str(result.path / "model.onnx"), load_external_data=False)
    assert [kw for kw, _ in calls] == [{"full_check": True}]
    assert calls[0][1] == [n.op_type for n in saved.graph.node]  # the final graph, not an earlier one


def test_an_invalid_final_graph_is_a_bug_and_writes_nothing(tiny_checkpoint, monkeypatch, tmp_path):
    import geofractal_edge.pipeline as pipeline

    real = pipeline.quantize

    def broken(model, config, context):
        out = real(model, config, context)
        out.graph.node[0].input[0] = "nowhere"  # a tensor no one produces
        return out

    monkeypatch.setattr(pipeline, "quantize", broken)
    with pytest.raises(Bug, match="the fp32 graph is not valid ONNX"):
        export_bundle(family="atlas", target="host-cpu", precision="fp32", model=tiny_checkpoint, out=tmp_path / "b")
    assert not (tmp_path / "b").exists()
