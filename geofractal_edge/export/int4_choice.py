"""Choose int4's block size and accuracy level on the export host, for a bundle that runs there (onnxruntime targets).

How fast `MatMulNBits` runs depends on the host's kernels more than on its arithmetic. MiniLM at batch 1 with the
family's choice (blocks of 32, int8 activations) ran x0.86 of fp32 on an AVX2 EPYC and x1.10-1.15 on an AVX-512
Xeon, where blocks of 128 ran x0.91 (benchmarks/RESULTS.md, twelfth and thirteenth sessions). So a family may list
alternatives worth trying (`ExportSpec.int4_alternatives`: (block size, accuracy level) pairs). On an ``ort``
target, with a config that leaves both settings to the family and `--int4-variants measure` (the default), export
builds the family's choice and each alternative as a bundle of its own, verifies each against torch, and times the
ones that pass, interleaved (backends/timing.py) with the same model at fp32, at the batch dimension's min and opt.
Each variant is judged by its worst batch against fp32 (int4 is for memory; what a user must not get is an int4
bundle slower than float): an alternative replaces the family's choice only where that worst ratio is at most
1 - `MIN_GAIN` of the family's choice's (a coarser block costs some accuracy, MiniLM: SQNR 11.3 -> 9.8 dB at blocks
of 128, which the noise of this measurement must not buy), and where its weights are at most `MAX_WEIGHT_GROWTH`
times the family's choice's (memory is what int4 is for: a block larger than a weight's rows pads them, a
collective's 288-wide towers to 384 at blocks of 128). A switch is timed a second time and kept only where the second
timing agrees. Where the family's choice fails parity, the alternative that passed with the best worst batch is kept
(a passing bundle over a failing one, whatever its weights); an alternative that cannot be built is recorded with its
error and the export goes on. Every variant's parity, SQNR, weight bytes and times go into the manifest
(`int4_choice`). The choice is a measurement: where two variants run within the margin of each other (the shipped
default collective), it can differ between runs and hosts; `--int4-variants family` keeps the family's choice
without measuring (reproducible bundles, or a CPU device other than the export host). TensorRT targets (``qdq``)
have no such setting. No torch.
"""

from __future__ import annotations

import dataclasses
import functools
import math

from geofractal_edge.artifacts.manifest import Int4Choice, Int4Variant
from geofractal_edge.backends.initializers import graph_weight_bytes
from geofractal_edge.export.timed import MIN_GAIN, batches as timed_batches, rounded, timed, worst as worst_ratio

MODES = ("measure", "family")  # gfedge export --int4-variants
MAX_WEIGHT_GROWTH = 1.20  # an alternative's graph weight bytes, at most this times the family's choice's


def variants(config, spec, dialect: str, mode: str) -> tuple:
    """The Int4Configs to build and compare, the family's own choice first; () where there is nothing to choose: not
    int4, not an onnxruntime target, `mode` "family", no alternatives in the spec, or a config that names either setting.
    `config`: the precision's config before `for_spec` resolves the family's choices."""
    if mode != "measure" or config.precision != "int4" or dialect != "ort" or not spec.int4_alternatives:
        return ()
    if config.block_size is not None or config.accuracy_level is not None:  # the user chose
        return ()
    own = config.for_spec(spec)
    others = tuple(dict.fromkeys(c for c in (dataclasses.replace(own, block_size=b, accuracy_level=a) for b, a in spec.int4_alternatives) if c != own))
    return (own, *others) if others else ()


def choose(configs: tuple, bundles: list, reports: list, errors: dict[int, str], reference, settings) -> Int4Choice:
    """The record for `variants`' `configs` (the family's choice first), their staged bundles and parity reports (None
    for an alternative that could not be built, `errors[i]` saying why). Where two or more are candidates (passed
    parity, weights within MAX_WEIGHT_GROWTH; where the family's choice failed, every one that passed), they are timed
    here against `reference()` (a staged bundle of the same model at fp32, built only then, run with its own runtime
    settings) with the target's runtime `settings` (no small-call session: that is decided after); a switch is timed again and kept only if confirmed."""
    batches = timed_batches(bundles[0])
    weights = [graph_weight_bytes(b.model_path) if b is not None else None for b in bundles]
    passed = [i for i, report in enumerate(reports) if report is not None and report.passed]
    eligible = [i for i in passed if weights[i] <= MAX_WEIGHT_GROWTH * weights[0]] if 0 in passed else passed
    runs = {}  # (bundle, runtime settings): the fp32 reference with its own, the variants with the target's
    if len(eligible) > 1:
        fp32_bundle = reference()
        runs["fp32"] = (fp32_bundle, fp32_bundle.manifest.target.runtime)
        runs.update({i: (bundles[i], settings) for i in eligible})
    times = timed(list(runs.values()), batches) if runs else []
    fp32 = rounded(times[0]) if times else ()
    by_index = dict(zip(eligible, times[1:]))
    records = [_variant(configs[i], reports[i], weights[i], by_index.get(i), batches, errors.get(i, "")) for i in range(len(configs))]
    choice = _decide(records, eligible, by_index, fp32)
    if choice.chosen != 0 and 0 in eligible:  # a switch: confirmed by a second timing of the two and fp32
        again = timed([runs["fp32"], runs[0], runs[choice.chosen]], batches)
        second = _decide(records, [0, choice.chosen], {0: again[1], choice.chosen: again[2]}, tuple(again[0]))
        confirmed = second.chosen == choice.chosen
        why = f"{choice.why}; {'confirmed' if confirmed else 'not confirmed'} by a second timing: {second.why}"
        choice = dataclasses.replace(choice, chosen=choice.chosen if confirmed else 0, why=why)
    return choice


def _variant(config, report, weight_bytes: int | None, times: list[float] | None, batches: tuple[int, ...], error: str) -> Int4Variant:
    sqnr = report.metrics.get("sqnr_db") if report is not None else None
    return Int4Variant(block_size=config.block_size, accuracy_level=config.accuracy_level, parity_passed=bool(report is not None and report.passed),
                       sqnr_db=round(sqnr, 2) if isinstance(sqnr, float) and math.isfinite(sqnr) else None, weight_bytes=weight_bytes or 0,
                       batches=batches, p50_us=rounded(times) if times else (), error=error)


def _decide(records: list[Int4Variant], eligible: list[int], times: dict[int, list[float]], fp32: tuple[float, ...]) -> Int4Choice:
    """The family's choice (index 0) unless a candidate (`eligible`; `times`: theirs, where there were two or more) is at
    least MIN_GAIN better than it at its worst batch against fp32 (`fp32`: the reference's times at the same batches);
    where the family's choice failed parity, the candidate with the best worst batch (none: the family's, and export
    reports its failure)."""
    choice = functools.partial(Int4Choice, variants=tuple(records), fp32_p50_us=fp32)
    if not eligible:
        return choice(chosen=0, why="no variant passed parity")
    if eligible == [0]:
        return choice(chosen=0, why=f"no alternative both passed parity and kept its weights within x{MAX_WEIGHT_GROWTH:.2f} of the family's choice's")
    if len(eligible) == 1:
        return choice(chosen=eligible[0], why=f"the family's choice failed parity; {_setting(records[eligible[0]])} passed, the only one")
    worst = {i: worst_ratio(times[i], fp32) for i in eligible}
    if 0 not in worst:
        best = min(worst, key=worst.get)
        return choice(chosen=best, why=f"the family's choice failed parity; {_setting(records[best])} passed, at worst x{worst[best]:.2f} of fp32's time")
    best = min((i for i in worst if i != 0), key=worst.get)
    gain = worst[best] / worst[0]
    compared = f"at worst x{worst[best]:.2f} of fp32's time against x{worst[0]:.2f} for the family's choice (x{gain:.2f}"
    if gain <= 1 - MIN_GAIN:
        return choice(chosen=best, why=f"{_setting(records[best])}: {compared}, at most x{1 - MIN_GAIN:.2f})")
    return choice(chosen=0, why=f"the best alternative, {_setting(records[best])}: {compared}, above x{1 - MIN_GAIN:.2f})")


def _setting(variant: Int4Variant) -> str:
    return f"blocks of {variant.block_size}, accuracy_level {variant.accuracy_level}"
