"""Export measures onnxruntime's lookup-table 2-bit kernel on a TriX dispatch bundle and the bundle follows the record;
where it is not kept (measured or `--lut-gemm off`) the routing signatures are packed at 2 bits as an fp32 bundle holds them
(export/lut_choice.py)."""

from __future__ import annotations

import json

import onnx
import pytest

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.export import timed
from geofractal_edge.models.trix.checkpoint import load_checkpoint
from geofractal_edge.models.trix.family import exportable_from_model
from geofractal_edge.pipeline import export_bundle
from tests.conftest import gfedge, traced_once


def _export(checkpoint, factory, out, mode):
    exportable = exportable_from_model(load_checkpoint(checkpoint), name="t", source={}, lowering="dispatch_by_route")
    return export_bundle(family="trix", target="host-cpu", precision="int8", out=out, exportable=exportable, small_calls="off", lut_gemm=mode,
                         traced=traced_once(factory, "trix-dispatch_by_route", exportable))


def _float_signatures(bundle) -> list[str]:
    graph = onnx.load(str(open_bundle(bundle).model_path))
    return [i.name for i in graph.graph.initializer if i.name.endswith("signatures")]


def _levels(bundle) -> dict[str, set[int]]:
    """MatMulNBits accuracy_level of the 2-bit products, by what they read: tiles or routing signatures."""
    graph = onnx.load(str(open_bundle(bundle).model_path))
    levels: dict[str, set[int]] = {"tiles": set(), "signatures": set()}
    for node in graph.graph.node:
        attrs = {a.name: a.i for a in node.attribute}
        if node.op_type == "MatMulNBits" and attrs.get("bits") == 2:
            levels["tiles" if "_q.q2" in node.input[1] else "signatures"].add(attrs.get("accuracy_level", 0))
    return levels


def test_measure_records_three_timings_and_the_runtime_follows_the_record(trix_checkpoint, tmp_path_factory, tmp_path, monkeypatch):
    monkeypatch.setattr(timed, "ROUNDS", 2)  # the wiring, not the figure: a short measurement
    monkeypatch.setattr(timed, "ROUND_SECONDS", 0.005)
    result = _export(trix_checkpoint, tmp_path_factory, tmp_path / "measure", "measure")
    choice = result.manifest.lut_choice
    assert result.parity.passed and choice is not None
    assert choice.batches == (1, 16) and all(len(t) == 2 and min(t) > 0 for t in (choice.fp32_p50_us, choice.on_p50_us, choice.off_p50_us))
    assert result.manifest.target.runtime.lut_gemm == choice.kept and "with the lookup-table kernel at worst" in choice.why
    assert bool(_float_signatures(result.path)) == choice.kept, "float routing scores only where the kernel stays"
    shown = gfedge("inspect", result.path)
    assert shown.returncode == 0 and f"lookup-table 2-bit kernel: {'kept' if choice.kept else 'not kept'}" in shown.stdout, shown.stdout
    stored = json.loads((result.path / "manifest.json").read_text())["lut_choice"]
    assert stored["kept"] == choice.kept and stored["on_p50_us"] == list(choice.on_p50_us)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["measure"]  # the staged fp32 reference is gone


@pytest.mark.parametrize("faster", [True, False], ids=["kept", "measured-off"])
def test_the_signatures_stay_float_only_where_the_measured_kernel_is_kept(trix_checkpoint, tmp_path_factory, tmp_path, monkeypatch, faster):
    """Timings faked to decide each way: where the kernel is measured off, the bundle holds the graph timed without it,
    signatures packed (as --lut-gemm off writes it), and parity and the manifest's hashes are of that graph."""
    from geofractal_edge.export import lut_choice

    def fake_timed(runs, at):  # fp32, with the kernel, without it: the kernel x0.5 or x1.5 of the exact one's time
        return [1000.0] * len(at), [(500.0 if faster else 1500.0)] * len(at), [1000.0] * len(at)

    monkeypatch.setattr(lut_choice, "timed", fake_timed)
    result = _export(trix_checkpoint, tmp_path_factory, tmp_path / "faked", "measure")
    assert result.parity.passed and result.manifest.lut_choice.kept is faster and result.manifest.target.runtime.lut_gemm is faster
    assert bool(_float_signatures(result.path)) is faster
    assert gfedge("verify", result.path).returncode == 0  # the rewritten model.onnx is the one the manifest hashes


def test_off_keeps_the_exact_kernel_and_packs_the_signatures(trix_checkpoint, trix_bundle_factory, tmp_path_factory, tmp_path):
    result = _export(trix_checkpoint, tmp_path_factory, tmp_path / "off", "off")
    assert result.parity.passed and not result.manifest.target.runtime.lut_gemm
    assert not result.manifest.lut_choice.kept and "--lut-gemm off" in result.manifest.lut_choice.why
    assert not _float_signatures(result.path)  # 2-bit, read in float arithmetic, as in the fp32 bundle
    assert _float_signatures(trix_bundle_factory("int8", "dispatch_by_route"))  # the conftest bundle: --lut-gemm on
    assert _levels(result.path) == {"tiles": {0}, "signatures": {0}}  # float arithmetic: the tiles stay 2-bit in memory


@pytest.mark.parametrize("scheme", ["Int8Config", "Int4Config"])
def test_a_config_asks_int8_activations_for_the_tiles_and_the_routers_stay_float(trix_checkpoint, tmp_path_factory, tmp_path, scheme):
    """tile_accuracy_level=4: every tile product at MatMulNBits accuracy_level 4, no routing product; recorded in the
    manifest's quantization, gated by parity, and the graph the manifest hashes. The lookup-table kernel (which would
    override the level) is left out with the reason recorded, not measured (lut_gemm left at its default, measure)."""
    from geofractal_edge.export.quantize import QuantConfig

    exportable = exportable_from_model(load_checkpoint(trix_checkpoint), name="t", source={}, lowering="dispatch_by_route")
    result = export_bundle(family="trix", target="host-cpu", out=tmp_path / "al4", exportable=exportable, small_calls="off",
                           config=QuantConfig.from_dict({"scheme": scheme, "tile_accuracy_level": 4}),
                           traced=traced_once(tmp_path_factory, "trix-dispatch_by_route", exportable))
    assert result.parity.passed and result.manifest.quantization["tile_accuracy_level"] == 4
    assert _levels(result.path) == {"tiles": {4}, "signatures": {0}}
    choice = result.manifest.lut_choice
    assert not choice.kept and not choice.batches and "tile_accuracy_level 4" in choice.why and not result.manifest.target.runtime.lut_gemm
    assert gfedge("verify", result.path).returncode == 0


def test_the_lookup_table_kernel_and_a_tile_accuracy_level_are_not_both_taken(trix_checkpoint, tmp_path):
    from geofractal_edge.errors import GfedgeError
    from geofractal_edge.export.quantize.int8 import Int8Config

    exportable = exportable_from_model(load_checkpoint(trix_checkpoint), name="t", source={}, lowering="dispatch_by_route")
    with pytest.raises(GfedgeError, match="--lut-gemm on and tile_accuracy_level 4 both choose") as caught:
        export_bundle(family="trix", target="host-cpu", out=tmp_path / "b", exportable=exportable, lut_gemm="on", config=Int8Config(tile_accuracy_level=4))
    assert "drop one" in caught.value.fix and not (tmp_path / "b").exists()


def test_a_family_that_asks_for_no_kernel_gets_no_record(trix_bundle_factory):
    assert open_bundle(trix_bundle_factory("int8", "compute_all_select")).manifest.lut_choice is None
    assert open_bundle(trix_bundle_factory("fp32", "dispatch_by_route")).manifest.lut_choice is None


def test_a_trace_of_another_lowering_is_refused_in_one_line(trix_checkpoint, tmp_path_factory, tmp_path):
    """A trace is reused only for the exportable it came from: the same weights under another lowering are refused."""
    from geofractal_edge.errors import GfedgeError

    gather = exportable_from_model(load_checkpoint(trix_checkpoint), name="t", source={}, lowering="gather_by_route")
    dispatch = exportable_from_model(load_checkpoint(trix_checkpoint), name="t", source={}, lowering="dispatch_by_route")
    other = traced_once(tmp_path_factory, "trix-gather_by_route", gather)
    with pytest.raises(GfedgeError, match="not a trace of this trix model") as caught:
        export_bundle(family="trix", target="host-cpu", precision="fp32", out=tmp_path / "b", exportable=dispatch, traced=other)
    assert "pass export.trace.traced() of the same exportable" in caught.value.fix and not (tmp_path / "b").exists()
