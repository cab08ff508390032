"""Export builds, verifies and times int4 variants on the export host, and the bundle holds the one it chose
(export/int4_choice.py), on the tiny Atlas with alternatives given to its spec."""

from __future__ import annotations

import dataclasses

import onnx
import pytest

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.errors import GfedgeError
from geofractal_edge.export import int4_choice, timed
from geofractal_edge import pipeline
from geofractal_edge.models.family import family_module
from geofractal_edge.pipeline import export_bundle


def test_export_measures_int4_variants_and_the_bundle_holds_the_chosen_one(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(timed, "ROUNDS", 2)  # what is timed and recorded, not how well: a few calls do
    monkeypatch.setattr(timed, "ROUND_SECONDS", 0.002)
    quantize = pipeline.quantize

    def failing_at_32(graph, config, context):  # an alternative that cannot be built: recorded, and the export goes on
        if getattr(config, "block_size", None) == 32:
            raise RuntimeError("no kernel for this block size\nsecond line")
        return quantize(graph, config, context)

    monkeypatch.setattr(pipeline, "quantize", failing_at_32)
    exportable = family_module("atlas").load_exportable(tiny_checkpoint)
    exportable.spec = dataclasses.replace(exportable.spec, int4_alternatives=((16, 4), (64, 0), (128, 0), (32, 0)))
    phases = []
    result = export_bundle(family="atlas", target="host-cpu", precision="int4", out=tmp_path / "b", exportable=exportable, small_calls="off",
                           progress=lambda phase, done, total: phases.append(phase))
    assert {p.partition(" | ")[0] for p in phases} == {"export atlas int4"}  # one bar, each phase shown beside it
    shown = [p.partition(" | ")[2] for p in phases]
    assert shown[:3] == ["trace", "quantize", "int4 variant 1 of 5: blocks of 16, accuracy_level 0"]
    assert "int4 variant 5 of 5: blocks of 32, accuracy_level 0" in shown and shown[-1] == "done"
    assert shown.index("int4 variants: choosing") < shown.index("write") < shown.index("verify")
    choice = result.manifest.int4_choice
    assert [(v.block_size, v.accuracy_level) for v in choice.variants] == [(16, 0), (16, 4), (64, 0), (128, 0), (32, 0)]  # the family's first
    assert choice.variants[4].error == "RuntimeError: no kernel for this block size" and not choice.variants[4].parity_passed
    own = choice.variants[0].weight_bytes
    assert choice.variants[3].weight_bytes > int4_choice.MAX_WEIGHT_GROWTH * own  # the tiny model's 32-wide rows pad to 128
    for variant in choice.variants:
        assert variant.batches == (1, 2048)  # the batch dimension's min and opt
        assert variant.error == "" or variant is choice.variants[4]
        candidate = variant.parity_passed and variant.weight_bytes <= int4_choice.MAX_WEIGHT_GROWTH * own
        assert len(variant.p50_us) == (2 if candidate else 0) and all(t > 0 for t in variant.p50_us)
        assert variant.sqnr_db is None or variant.sqnr_db > 0
    assert len(choice.fp32_p50_us) == 2 and all(t > 0 for t in choice.fp32_p50_us)  # the fp32 reference, timed with them
    kept = choice.variants[choice.chosen]
    assert kept.parity_passed and result.parity.passed and choice.why
    assert (result.manifest.quantization["block_size"], result.manifest.quantization["accuracy_level"]) == (kept.block_size, kept.accuracy_level)
    graph = onnx.load(str(result.path / "model.onnx"))
    nbits = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in graph.graph.node if n.op_type == "MatMulNBits"]
    assert nbits and all(n["block_size"] == kept.block_size and n.get("accuracy_level", 0) == kept.accuracy_level for n in nbits if n["bits"] == 4)
    assert open_bundle(result.path).manifest.int4_choice == choice  # sealed with the bundle
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # the variants' scratch bundles are gone


def test_family_mode_keeps_the_family_choice_without_measuring_and_a_bad_mode_is_refused(tiny_checkpoint, tmp_path):
    exportable = family_module("atlas").load_exportable(tiny_checkpoint)
    exportable.spec = dataclasses.replace(exportable.spec, int4_alternatives=((16, 4),))
    result = export_bundle(family="atlas", target="host-cpu", precision="int4", out=tmp_path / "b", exportable=exportable,
                           small_calls="off", int4_variants="family")
    assert result.manifest.int4_choice is None and result.manifest.quantization["accuracy_level"] == 0
    with pytest.raises(GfedgeError, match="--int4-variants 'fast' is not a mode"):
        export_bundle(family="atlas", target="host-cpu", precision="int4", out=tmp_path / "c", int4_variants="fast")
