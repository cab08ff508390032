"""Export's choice of int4 block size and accuracy level: which variants it builds, and how it decides from their parity
and times (export/int4_choice.py)."""

from __future__ import annotations

import dataclasses
import types

import pytest

from geofractal_edge.artifacts.manifest import Int4Variant
from geofractal_edge.export import int4_choice
from geofractal_edge.export.quantize.int4 import Int4Config
from geofractal_edge.export.quantize.int8 import Int8Config
from geofractal_edge.models.spec import ExportSpec, TensorSpec

SPEC = ExportSpec(family="t", inputs=(TensorSpec("x", "float32", ("batch", 4)),), outputs=(TensorSpec("y", "float32", ("batch", 4)),),
                  dim_ranges={}, task_metric="embedding_retrieval", int4_block_size=32, int4_accuracy_level=4,
                  int4_alternatives=((128, 4), (32, 4), (64, 0)))


def test_the_family_choice_comes_first_then_each_distinct_alternative():
    tried = int4_choice.variants(Int4Config(), SPEC, "ort", "measure")
    assert [(c.block_size, c.accuracy_level) for c in tried] == [(32, 4), (128, 4), (64, 0)]  # (32, 4) is the family's own
    assert all(c.int8_upstream_of == () and c.scale_dtype == "float16" for c in tried)  # the rest as the family resolves it


@pytest.mark.parametrize("config, dialect, mode, spec", [
    (Int4Config(), "ort", "measure", dataclasses.replace(SPEC, int4_alternatives=((32, 4),))),  # only the family's own again
    (Int4Config(block_size=64), "ort", "measure", SPEC),  # the user named a setting: theirs holds
    (Int4Config(accuracy_level=0), "ort", "measure", SPEC),
    (Int4Config(), "qdq", "measure", SPEC),  # TensorRT: no MatMulNBits, nothing to choose
    (Int4Config(), "ort", "family", SPEC),  # --int4-variants family
    (Int8Config(), "ort", "measure", SPEC),
    (Int4Config(), "ort", "measure", dataclasses.replace(SPEC, int4_alternatives=())),
])
def test_nothing_to_choose(config, dialect, mode, spec):
    assert int4_choice.variants(config, spec, dialect, mode) == ()


def _record(block: int, passed: bool = True) -> Int4Variant:
    return Int4Variant(block_size=block, accuracy_level=4, parity_passed=passed, sqnr_db=10.0, weight_bytes=1000, batches=(1, 16), p50_us=())


FP32 = (100.0, 1000.0)  # the same model at fp32, microseconds per call at batches 1 and 16


def test_an_alternative_is_kept_only_where_its_worst_batch_against_fp32_is_clearly_better():
    records = [_record(32), _record(128)]
    faster = int4_choice._decide(records, [0, 1], {0: [90.0, 1300.0], 1: [85.0, 1100.0]}, FP32)  # worst x1.30 -> x1.10
    assert faster.chosen == 1 and "at worst x1.10 of fp32's time against x1.30" in faster.why and faster.fp32_p50_us == FP32
    noise = int4_choice._decide(records, [0, 1], {0: [90.0, 1300.0], 1: [80.0, 1250.0]}, FP32)  # x1.25 / x1.30 = x0.96
    assert noise.chosen == 0 and "x0.96, above x0.92" in noise.why
    # faster at batch 1 but worse at its worst batch: the family's choice holds
    assert int4_choice._decide(records, [0, 1], {0: [90.0, 1000.0], 1: [50.0, 1100.0]}, FP32).chosen == 0


def test_a_variant_that_is_not_a_candidate_is_never_chosen():
    records = [_record(32), _record(128, passed=False), _record(64)]
    choice = int4_choice._decide(records, [0, 2], {0: [100.0, 900.0], 2: [99.0, 900.0]}, FP32)  # 1 failed parity: not timed
    assert choice.chosen == 0 and choice.variants[1].parity_passed is False
    alone = int4_choice._decide(records[:2], [0], {}, ())  # nothing to time against
    assert alone.chosen == 0 and alone.why.startswith("no alternative both passed parity")
    assert int4_choice._decide([_record(32, passed=False)], [], {}, ()).chosen == 0  # none passed: export reports the family's failure
    only = int4_choice._decide([_record(32, passed=False), _record(128)], [1], {}, ())
    assert only.chosen == 1 and "failed parity" in only.why
    failed_own = int4_choice._decide([_record(32, passed=False), _record(128), _record(64)], [1, 2], {1: [120.0, 900.0], 2: [110.0, 950.0]}, FP32)
    assert failed_own.chosen == 2 and "the family's choice failed parity" in failed_own.why  # the better worst batch


class _Bundle:
    """What `choose` reads of a staged bundle: its batch dimension and model file (no initializers: 0 weight bytes)."""

    def __init__(self, folder, block: int) -> None:
        self.model_path = folder / f"{block}.onnx"
        self.model_path.write_bytes(b"")
        graph = types.SimpleNamespace(data_inputs=[types.SimpleNamespace(shape=("batch", 4))], dim_ranges={"batch": types.SimpleNamespace(min=1, opt=8, max=9)})
        self.manifest = types.SimpleNamespace(graph=graph)


PASSED = types.SimpleNamespace(passed=True, metrics={"sqnr_db": 10.0})
CONFIGS = (Int4Config(block_size=32, accuracy_level=4), Int4Config(block_size=128, accuracy_level=4))


def test_nothing_is_timed_and_no_fp32_bundle_built_without_two_candidates(tmp_path):
    failed = types.SimpleNamespace(passed=False, metrics={})
    choice = int4_choice.choose(CONFIGS, [_Bundle(tmp_path, 32), _Bundle(tmp_path, 128)], [PASSED, failed], {}, reference=lambda: pytest.fail("built an fp32 bundle"), settings=None)
    assert choice.chosen == 0 and choice.fp32_p50_us == () and all(v.p50_us == () for v in choice.variants)
    assert [v.batches for v in choice.variants] == [(1, 8), (1, 8)]
    broken = int4_choice.choose(CONFIGS, [_Bundle(tmp_path, 32), None], [PASSED, None], {1: "RuntimeError: no kernel"}, reference=lambda: pytest.fail("built"), settings=None)
    assert broken.chosen == 0 and broken.variants[1].error == "RuntimeError: no kernel" and not broken.variants[1].parity_passed


@pytest.mark.parametrize("second, kept", [
    ([[100.0, 1000.0], [90.0, 1300.0], [95.0, 1250.0]], 0),  # x1.25 against x1.30: x0.96, above the margin
    ([[100.0, 1000.0], [90.0, 1300.0], [88.0, 1060.0]], 1),  # x1.06 against x1.30: x0.82
])
def test_a_switch_is_timed_again_and_kept_only_if_the_second_timing_agrees(tmp_path, monkeypatch, second, kept):
    """Times per batch (1, 8): fp32, the family's choice, the alternative; the first timing proposes the switch."""
    first = [[100.0, 1000.0], [90.0, 1300.0], [85.0, 1050.0]]  # worst x1.30 against x1.05: x0.81
    timings = iter([first, second])
    fp32 = types.SimpleNamespace(manifest=types.SimpleNamespace(target=types.SimpleNamespace(runtime="fp32's own")))
    settings = []

    def fake_timed(runs, at):
        settings.append([s for _, s in runs])
        return next(timings)

    monkeypatch.setattr(int4_choice, "timed", fake_timed)
    choice = int4_choice.choose(CONFIGS, [_Bundle(tmp_path, 32), _Bundle(tmp_path, 128)], [PASSED, PASSED], {}, reference=lambda: fp32, settings="target's")
    assert settings == [["fp32's own", "target's", "target's"]] * 2  # the reference runs with its own settings, the variants with the target's
    assert choice.chosen == kept and ("; confirmed by" if kept else "; not confirmed by") in choice.why
    assert choice.variants[1].p50_us == (85.0, 1050.0) and choice.fp32_p50_us == (100.0, 1000.0)  # the first timing is recorded
